"""The preset suite: the sides, the data, and the order of the checks, for each preset on each device.

Checks (`checks.SUITE_CHECKS`): logits, hidden-states, gradients, trajectory, cross-eval; "port" puts the
preset through the port API. Only trajectory and cross-eval train. The sides run the trainers' own code
(`parity.sides`); every verdict is the comparison core's (`parity.compare`), as the port API's are.
(accuracy, full trainings over seeds, is `parity.accuracy`: hours on a CPU.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from common.config import Config, DType
from common.data import Dataset, images_to_row_sequences
from common.presets import get_preset
from parity import checks, compare, devices
from parity.checks import SUITE_CHECKS
from parity.compare import Row
from parity.sides import JaxSide, OracleSide, Side, TorchSide, TrainingSide


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
class Curves:
    """Loss curves of the trajectory check at the recipe's lr, for the plot."""

    preset: str
    device: str
    torch32: np.ndarray
    jax32: np.ndarray
    torch64: np.ndarray


@dataclasses.dataclass
class SuiteResult:
    """Every row, and what the plots draw: the recipe-lr loss curves and the float32 logit differences."""

    rows: list[Row] = dataclasses.field(default_factory=list)
    curves: list[Curves] = dataclasses.field(default_factory=list)
    logit_gaps: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


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


def run_preset(
    preset: str,
    dataset: Dataset,
    device: str,
    options: SuiteOptions,
    jax_side: JaxSide | None = None,
    on_curves: Callable[[Curves], None] | None = None,
    on_logit_gaps: Callable[[str, np.ndarray], None] | None = None,
) -> list[Row]:
    """Every requested check for one preset on one device ("cpu" or "gpu"), float32 and float64."""
    torch_side = TorchSide("cuda" if device == "gpu" else "cpu")
    jax_side = jax_side or JaxSide(device, backward=options.backward)
    oracle = OracleSide()
    rows: list[Row] = []
    base = get_preset(preset)
    sides = (torch_side, jax_side, oracle)
    recipe: list[Row] | None = None if "trajectory" in options.checks or "cross-eval" in options.checks else []
    for dtype in options.dtypes:
        if dtype == "float64" and recipe is None:
            # the recipe-lr runs are float32 on the JAX side: run before float64 turns JAX's x64 mode on for the
            # process, which changes every trace, so that they reuse the float32 programs compiled above
            recipe = recipe_lr_checks(preset, base, device, dataset, options, sides, on_curves)
        config = dataclasses.replace(base, dtype=dtype)
        weights = checks.random_weights(config)
        images, labels = checks.test_rows(dataset, options.images, dtype)
        row = Row(preset, "", "", device, dtype, "torch vs jax", {}, "", None)
        if "logits" in options.checks:
            logits = {side.name: side.logits(config, weights, images) for side in sides}
            rows += checks.compare_logits(dataclasses.replace(row, check="logits", case="random weights"), logits)
            if on_logit_gaps and dtype == "float32":
                on_logit_gaps(preset, (logits["torch"] - logits["jax"]).ravel())
        if "hidden-states" in options.checks:
            states = {side.name: side.hidden_states(config, weights, images) for side in sides}
            hidden = dataclasses.replace(row, check="hidden-states", case="every layer, step and unit")
            rows += checks.compare_hidden_states(hidden, config, states)
        if "gradients" in options.checks:
            _, torch_grads = torch_side.gradients(config, weights, images, labels)
            _, jax_grads = jax_side.gradients(config, weights, images, labels)
            gradients = dataclasses.replace(row, check="gradients", case="every tensor")
            rows.append(compare.compare_gradients(gradients, torch_grads, jax_grads))
        if "trajectory" in options.checks:
            rows.append(small_lr_trajectory(row, config, dataset, options, torch_side, jax_side))
    if recipe is None:
        recipe = recipe_lr_checks(preset, base, device, dataset, options, sides, on_curves)
    rows += recipe
    if "port" in options.checks:
        rows += port_rows(preset, dataset, device, options)
    return rows


def port_rows(preset: str, dataset: Dataset, device: str, options: SuiteOptions) -> list[Row]:
    """The preset as a declared port through `check_port` (on the CPU: the API runs there)."""
    if device != "cpu":
        return devices.not_run_rows(preset, device, "the port API runs on the CPU", ("port",))
    from parity.port.arguments import PORT_CHECKS
    from parity.port.check import check_port
    from parity.preset_ports import preset_port

    images, labels = checks.test_rows(dataset, options.images, "float32")
    # not "units": a preset's `rnn` row pairs all of nn.LSTM's layers with Flax's last, a chained comparison only
    chained = tuple(check for check in PORT_CHECKS if check != "units")
    report = check_port(preset_port(preset), images, labels, checks=chained, dtypes=options.dtypes)
    return [dataclasses.replace(row, check=f"port {row.check}") for row in report.rows]


def train_rows(
    dataset: Dataset, config: Config, steps: int, pool_steps: int = 0
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The first `steps` sampler batches, as indices into a compact pool of the training images that the first
    `max(steps, pool_steps)` batches touch. Trajectories of different lengths given one `pool_steps` get pools
    of one shape, so that the JAX side's compiled step (which takes the whole pool) serves them all."""
    batches = checks.training_batches(dataset, config, max(steps, pool_steps))
    used = np.unique(np.concatenate(batches))
    position = {index: i for i, index in enumerate(used)}
    local = [np.array([position[i] for i in batch]) for batch in batches[:steps]]
    return images_to_row_sequences(dataset.train_images[used], config.dtype), dataset.train_labels[used], local


def pool_steps(options: SuiteOptions) -> int:
    """One pool for both trajectories (see `train_rows`): one compile of the JAX step per dtype, not per length."""
    return max(options.small_lr_steps, options.recipe_lr_steps)


def small_lr_trajectory(
    row: Row, config: Config, dataset: Dataset, options: SuiteOptions, torch_side: TrainingSide, jax_side: TrainingSide
) -> Row:
    """Trajectory at lr 1e-4: every step's loss and weights agree (float64: the math; float32: rounding's envelope)."""
    config = dataclasses.replace(config, learning_rate=compare.SMALL_LEARNING_RATE)
    weights = checks.random_weights(config)
    pool, labels, batches = train_rows(dataset, config, options.small_lr_steps, pool_steps(options))
    torch_run = torch_side.train(config, weights, pool, labels, batches)
    jax_run = jax_side.train(config, weights, pool, labels, batches)
    rounding = None
    if config.dtype == "float32":
        exact = dataclasses.replace(config, dtype="float64")
        weights64 = {k: v.astype(np.float64) for k, v in weights.items()}
        torch64 = torch_side.train(exact, weights64, pool.astype(np.float64), labels, batches)
        rounding = compare.trajectory_gap(torch_run, torch64)
    row = dataclasses.replace(row, check="trajectory", case=f"lr {config.learning_rate:g}")
    return compare.compare_trajectories(row, compare.trajectory_gap(torch_run, jax_run), config.learning_rate, rounding)


def recipe_lr_checks(
    preset: str,
    base: Config,
    device: str,
    dataset: Dataset,
    options: SuiteOptions,
    sides: tuple[TrainingSide, TrainingSide, Side],
    on_curves: Callable[[Curves], None] | None,
) -> list[Row]:
    """The trajectory at the recipe's lr (drift against rounding's own), and cross-eval of the weights those
    runs trained: logits by all three sides, and predictions on the test set by both frameworks."""
    torch_side, jax_side, oracle = sides
    rows: list[Row] = []
    f32, f64 = base, dataclasses.replace(base, dtype="float64")
    weights32 = checks.random_weights(f32)
    weights64 = {name: array.astype(np.float64) for name, array in weights32.items()}
    pool, labels, batches = train_rows(dataset, f32, options.recipe_lr_steps, pool_steps(options))
    torch32 = torch_side.train(f32, weights32, pool, labels, batches)
    jax32 = jax_side.train(f32, weights32, pool, labels, batches)
    row = Row(preset, "trajectory", "recipe lr", device, "float32", "torch vs jax vs rounding", {}, "", None)
    if "trajectory" in options.checks:
        torch64 = torch_side.train(f64, weights64, pool.astype(np.float64), labels, batches)
        rows.append(checks.recipe_lr_verdict(row, base.learning_rate, torch32.losses, jax32.losses, torch64.losses))
        if on_curves:
            on_curves(Curves(preset, device, torch32.losses, jax32.losses, torch64.losses))
    if "cross-eval" not in options.checks:
        return rows
    images, labels_test = checks.test_rows(dataset, options.eval_images, "float32")
    for trained_by, run in (("torch", torch32), ("jax", jax32)):
        trained = run.weights[-1]
        subset = images[: options.images]
        results = {side.name: side.logits(f32, trained, subset) for side in (torch_side, jax_side, oracle)}
        cross = dataclasses.replace(row, check="cross-eval", case=f"logits, trained by {trained_by}")
        rows += checks.compare_logits(cross, results)
        predictions = dataclasses.replace(cross, case=f"predictions, trained by {trained_by}", compared="torch vs jax")
        torch_logits, jax_logits = torch_side.logits(f32, trained, images), jax_side.logits(f32, trained, images)
        rows.append(checks.compare_predictions(predictions, torch_logits, jax_logits, labels_test))
    return rows
