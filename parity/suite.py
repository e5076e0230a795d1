"""The preset suite: the data and the order of the checks, for each preset on each device.

Checks (`suite_checks.SUITE_CHECKS`): logits, hidden-states, gradients, trajectory, cross-eval; "port" puts the
preset through every check of the port API. Only trajectory and cross-eval train. Each preset is a port
(`parity.preset_ports`: the trainers' models, the JAX trainer's recurrence gradient, their own training
steps and optimizers), built, run and stepped through the port API's runners; gradients and the lr-1e-4
trajectory are `check_port` calls; what only the suite has stays here and in `parity.suite_checks`: the NumPy
oracle as a third side, the first state over, the recipe-lr envelope, cross-evaluation, devices and TF32.
Every verdict is the comparison core's (`parity.compare`). (accuracy, full trainings over seeds, is
`parity.accuracy`: hours on a CPU.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

import numpy as np

from common.config import Config, DType
from common.data import Dataset, images_to_row_sequences
from common.presets import get_preset
from common.weights import Weights
from parity import compare, devices, suite_checks
from parity.compare import Row
from parity.plots import Curves
from parity.port import flax_runner
from parity.port.arguments import PORT_CHECKS
from parity.port.declare import Port
from parity.port.scope import in_one_check
from parity.preset_ports import preset_port, trainer_optimizer
from parity.suite_checks import SIDES, SUITE_CHECKS


@dataclasses.dataclass(frozen=True)
class SuiteOptions:
    checks: tuple[str, ...] = SUITE_CHECKS
    dtypes: tuple[DType, ...] = ("float32", "float64")  # logits, hidden-states, gradients, trajectory at lr 1e-4
    images: int = 64  # real test images for logits, hidden-states and gradients
    small_lr_steps: int = 100  # trajectory: steps at lr 1e-4, held to a tight per-step tolerance
    recipe_lr_steps: int = 150  # trajectory at the recipe's lr (drift against rounding's), and cross-eval's training
    eval_images: int = 10000  # cross-eval
    backward: str = "auto"  # the Flax side's recurrence gradient (jax_impl.train.resolve_backward): as the trainer
    tf32: bool = False  # on a GPU, also the float32 rows with TF32 on, shown and not judged


@dataclasses.dataclass
class SuiteResult:
    """Every row, and what the plots draw: the recipe-lr loss curves and the float32 logit differences."""

    rows: list[Row] = dataclasses.field(default_factory=list)
    curves: list[Curves] = dataclasses.field(default_factory=list)
    logit_gaps: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


@in_one_check
def run_suite(
    presets: Sequence[str],
    dataset: Dataset,
    device_list: Sequence[str],
    options: SuiteOptions,
    progress: Callable[[Sequence[str], str], Iterable[str]] = lambda items, _: items,
    on_preset: Callable[[SuiteResult], None] = lambda _: None,
) -> SuiteResult:
    """Every preset on every device ("cpu", "gpu"); GPU rows 'not run' without one; TF32 off for judged rows.

    `on_preset` is handed the result so far after each preset on each device, so that a run cut short (a
    time limit, Ctrl-C) can keep what it finished. The cross-device row runs whenever the GPU rows do."""
    result = SuiteResult()
    for device in device_list:
        if device == "gpu":
            ok, reason = devices.gpu_available()
            if not ok:
                for preset in presets:
                    result.rows += devices.not_run_rows(preset, device, reason, options.checks)
                continue
            devices.set_tf32(False)
        for preset in progress(presets, f"parity ({device})"):
            result.rows += run_preset(
                preset,
                dataset,
                device,
                options,
                on_curves=result.curves.append,
                on_logit_gaps=result.logit_gaps.__setitem__,
            )
            if device == "gpu" and options.tf32:
                devices.set_tf32(True)
                tf32_run = run_preset(preset, dataset, device, dataclasses.replace(options, dtypes=("float32",)))
                result.rows += devices.as_tf32_rows(tf32_run)
                devices.set_tf32(False)
            on_preset(result)
    if "gpu" in device_list and devices.gpu_available()[0] and "logits" in options.checks:
        sides = devices.every_device_sides()
        for preset in presets:
            result.rows += devices.cross_device_rows(preset, dataset, options.dtypes, options.images, sides)
        on_preset(result)
    return result


@in_one_check
def run_preset(
    preset: str,
    dataset: Dataset,
    device: str,
    options: SuiteOptions,
    port: Port | None = None,
    on_curves: Callable[[Curves], None] | None = None,
    on_logit_gaps: Callable[[str, np.ndarray], None] | None = None,
) -> list[Row]:
    """Every requested check for one preset on one device ("cpu" or "gpu"), float32 and float64. `port`: the
    preset as a port (`preset_ports.preset_port`, the Flax side with `options.backward`), or one put in its
    place (a test's broken table)."""
    port = port or preset_port(preset, options.backward, device)
    rows: list[Row] = []
    base = get_preset(preset)
    # one pool of training images for both learning rates' runs: one input shape, so each dtype's compiled
    # Flax step serves both (the recipe lr's and lr 1e-4's batches are the sampler's first ones)
    trains = None
    if "trajectory" in options.checks or "cross-eval" in options.checks:
        steps = max(options.recipe_lr_steps, options.small_lr_steps if "trajectory" in options.checks else 0)
        trains = train_rows(dataset, base, steps)
        training = (trains[0], trains[1], trains[2][: options.recipe_lr_steps])
        rows += recipe_lr_checks(port, base, device, dataset, training, options, on_curves)
    for dtype in options.dtypes:
        config = dataclasses.replace(base, dtype=dtype)
        weights = suite_checks.random_weights(config)
        images, _ = suite_checks.test_rows(dataset, options.images, dtype)
        row = Row(preset, "", "", device, dtype, "torch vs jax", {}, "", None)
        if "logits" in options.checks:
            logits = {side: suite_checks.side_outputs(side, port, config, weights, images, device)[0] for side in SIDES}
            rows += suite_checks.compare_logits(dataclasses.replace(row, check="logits", case="random weights"), logits)
            if on_logit_gaps and dtype == "float32":
                on_logit_gaps(preset, (logits["torch"] - logits["jax"]).ravel())
        if "hidden-states" in options.checks:
            states = {
                side: suite_checks.side_outputs(side, port, config, weights, images, device, True) for side in SIDES
            }
            hidden = dataclasses.replace(row, check="hidden-states", case="every layer, step and unit")
            rows += suite_checks.compare_hidden_states(hidden, config, states)
    test = suite_checks.test_rows(dataset, options.images, "float32")  # checks 3 and 7
    if "gradients" in options.checks:
        rows += [
            replace(row, case="every tensor") for row in port_checks(port, test, ("gradients",), device, options, base)
        ]
    if "trajectory" in options.checks:
        config = dataclasses.replace(base, learning_rate=compare.SMALL_LEARNING_RATE)
        assert trains is not None
        pool, labels, batches = trains
        run = port_checks(
            port, (pool, labels), ("trajectory",), device, options, config, batches[: options.small_lr_steps]
        )
        rows += [replace(row, case=f"lr {config.learning_rate:g}") for row in run]
    if "port" in options.checks:  # not "units": the `rnn` row pairs all of nn.LSTM's layers with Flax's last
        chained = [check for check in PORT_CHECKS if check != "units"]
        rows += [replace(row, check=f"port {row.check}") for row in port_checks(port, test, chained, device, options)]
    return rows


def port_checks(
    port: Port,
    data: tuple[np.ndarray, np.ndarray],
    names: Sequence[str],
    device: str,
    options: SuiteOptions,
    config: Config | None = None,
    batches: list[np.ndarray] | None = None,
) -> list[Row]:
    """`check_port` on the preset's port: with a `config`, from the suite's start weights
    (`suite_checks.random_weights`) with the trainers' own optimizers (`preset_ports.trainer_optimizer`) on
    `batches` (checks 3 and 4); without, from the torch model's own initialisation plus noise with the port
    API's Adam at lr 1e-4 (check 7)."""
    from parity.port.check import ADAM, check_port

    weights = None if config is None else suite_checks.random_weights(config)
    optimizer = ADAM if config is None else trainer_optimizer(config)
    return check_port(
        port,
        *data,
        checks=names,
        dtypes=options.dtypes,
        weights=weights,
        batches=batches,
        optimizer=optimizer,
        device=device,
    ).rows


def train_rows(dataset: Dataset, config: Config, steps: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The first `steps` sampler batches (the trainers' own), as indices into a compact pool of the training
    images they touch: the pool, its labels, the batches."""
    batches = suite_checks.training_batches(dataset, config, steps)
    used = np.unique(np.concatenate(batches))
    position = {index: i for i, index in enumerate(used)}
    local = [np.array([position[i] for i in batch]) for batch in batches]
    return images_to_row_sequences(dataset.train_images[used], config.dtype), dataset.train_labels[used], local


def trained(
    side: str,
    port: Port,
    config: Config,
    weights: Weights,
    data: tuple[np.ndarray, np.ndarray],
    batches: list[np.ndarray],
    device: str,
) -> tuple[np.ndarray, Weights]:
    """One framework's training run through the port API's runners (the trainer's own step and optimizer, at
    `config`'s learning rate and dtype): each step's loss, and the canonical weights after the last."""
    from parity.port import trajectory
    from parity.port.table import declared
    from parity.port.weights import to_torch, torch_start

    table = declared(port, torch_start(port), "eval", device)
    run = trajectory.torch_steps if side == "torch" else trajectory.flax_steps
    losses = []
    with flax_runner.x64(config.dtype):
        for step in run(table, weights, config.dtype, trainer_optimizer(config), ((data[0],), data[1]), batches):
            losses.append(step[0])
    return np.array(losses), to_torch(table.entries, step[1], table.torch_shapes)


def recipe_lr_checks(
    port: Port,
    base: Config,
    device: str,
    dataset: Dataset,
    training: tuple[np.ndarray, np.ndarray, list[np.ndarray]],
    options: SuiteOptions,
    on_curves: Callable[[Curves], None] | None,
) -> list[Row]:
    """The trajectory at the recipe's lr (drift against rounding's own), and cross-eval of the weights those
    runs trained: logits by all three sides, and predictions on the test set by both frameworks. `training`:
    the pool of training images, its labels and the recipe lr's batches into it (`train_rows`)."""
    preset, rows = port.name, []
    f32, f64 = base, dataclasses.replace(base, dtype="float64")
    weights = suite_checks.random_weights(f32)
    pool, labels, batches = training
    torch32, torch_trained = trained("torch", port, f32, weights, (pool, labels), batches, device)
    jax32, jax_trained = trained("jax", port, f32, weights, (pool, labels), batches, device)
    row = Row(preset, "trajectory", "recipe lr", device, "float32", "torch vs jax vs rounding", {}, "", None)
    if "trajectory" in options.checks:
        torch64, _ = trained("torch", port, f64, weights, (pool, labels), batches, device)
        jax64, _ = trained("jax", port, f64, weights, (pool, labels), batches, device)
        rows.append(suite_checks.recipe_lr_verdict(row, base.learning_rate, (torch32, jax32), (torch64, jax64)))
        if on_curves:
            on_curves(Curves(preset, device, torch32, jax32, torch64))
    if "cross-eval" not in options.checks:
        return rows
    images, labels_test = suite_checks.test_rows(dataset, options.eval_images, "float32")
    for trained_by, after in (("torch", torch_trained), ("jax", jax_trained)):
        subset = images[: options.images]
        results = {side: suite_checks.side_outputs(side, port, f32, after, subset, device)[0] for side in SIDES}
        cross = dataclasses.replace(row, check="cross-eval", case=f"logits, trained by {trained_by}")
        rows += suite_checks.compare_logits(cross, results)
        predictions = dataclasses.replace(cross, case=f"predictions, trained by {trained_by}", compared="torch vs jax")
        torch_logits, jax_logits = (
            suite_checks.side_outputs(side, port, f32, after, images, device)[0] for side in SIDES[:2]
        )
        rows.append(suite_checks.compare_predictions(predictions, torch_logits, jax_logits, labels_test))
    return rows
