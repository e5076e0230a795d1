"""Run the parity checks for a preset on a device: the sides, the data, and the order of the checks.

Checks (`checks.SUITE_CHECKS`): logits, hidden-states, gradients, trajectory, cross-eval. Only trajectory
and cross-eval train. (accuracy, full trainings over seeds, is `parity.accuracy`: hours on a CPU.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from common.config import Config, DType
from common.data import Dataset, images_to_row_sequences
from common.presets import get_preset
from parity import checks
from parity.checks import SUITE_CHECKS, Row
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


@dataclasses.dataclass
class Curves:
    """Loss curves of the trajectory check at the recipe's lr, for the plot."""

    preset: str
    device: str
    torch32: np.ndarray
    jax32: np.ndarray
    torch64: np.ndarray


def gpu_available() -> tuple[bool, str]:
    """Both frameworks must see a GPU for the GPU rows to run."""
    import jax
    import torch

    if not torch.cuda.is_available():
        return False, "no GPU (torch sees no CUDA device)"
    try:
        jax.devices("gpu")
    except RuntimeError:
        return False, "no GPU (JAX sees none)"
    return True, ""


def set_tf32(enabled: bool) -> None:
    """TF32 on or off in both frameworks; off, GPU float32 results are held to the CPU tolerances."""
    from jax_impl import device as jax_device
    from torch_impl import device as torch_device

    torch_device.set_tf32(enabled)
    jax_device.set_tf32(enabled)


def as_tf32_rows(rows: list[Row]) -> list[Row]:
    """Rows of a run with TF32 on: shown beside the full-precision ones, not judged by float32's tolerances."""
    return [
        dataclasses.replace(
            row,
            dtype=f"{row.dtype}+tf32",
            passed=None,
            detail=f"TF32 on, not judged ({'passes' if row.passed else 'fails'} float32's "
            f"tolerance){'; ' + row.detail if row.detail else ''}",
        )
        for row in rows
        if row.dtype == "float32"
    ]


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
    for dtype in options.dtypes:
        config = dataclasses.replace(base, dtype=dtype)
        weights = checks.random_weights(config)
        images, labels = checks.test_rows(dataset, options.images, dtype)
        if "logits" in options.checks:
            logits = {side.name: side.logits(config, weights, images) for side in (torch_side, jax_side, oracle)}
            rows += checks.compare_logits(preset, config, device, logits, "random weights")
            if on_logit_gaps and dtype == "float32":
                on_logit_gaps(preset, (logits["torch"] - logits["jax"]).ravel())
        if "hidden-states" in options.checks:
            states = {side.name: side.hidden_states(config, weights, images) for side in (torch_side, jax_side, oracle)}
            rows += checks.compare_hidden_states(preset, config, device, states)
        if "gradients" in options.checks:
            _, torch_grads = torch_side.gradients(config, weights, images, labels)
            _, jax_grads = jax_side.gradients(config, weights, images, labels)
            rows.append(checks.compare_gradients(preset, config, device, torch_grads, jax_grads))
        if "trajectory" in options.checks:
            rows.append(small_lr_trajectory(preset, config, device, dataset, options, torch_side, jax_side))
    if "trajectory" in options.checks or "cross-eval" in options.checks:
        rows += recipe_lr_checks(preset, base, device, dataset, options, torch_side, jax_side, oracle, on_curves)
    if "port" in options.checks:
        rows += port_rows(preset, dataset, device, options)
    return rows


def port_rows(preset: str, dataset: Dataset, device: str, options: SuiteOptions) -> list[Row]:
    """The preset as a declared port through `parity.prove` (on the CPU: the API runs there)."""
    if device != "cpu":
        return not_run_rows(
            preset, device, "the port API runs on the CPU", dataclasses.replace(options, checks=("port",))
        )
    from parity.preset_ports import preset_port
    from parity.prove import check_port

    images, labels = checks.test_rows(dataset, options.images, "float32")
    report = check_port(preset_port(preset), images, labels, dtypes=options.dtypes)
    return [dataclasses.replace(row, check=f"port {row.check}") for row in report.rows]


def train_rows(dataset: Dataset, config: Config, steps: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The training images the first `steps` sampler batches touch, relabelled as a compact pool."""
    batches = checks.training_batches(dataset, config, steps)
    used = np.unique(np.concatenate(batches))
    position = {index: i for i, index in enumerate(used)}
    local = [np.array([position[i] for i in batch]) for batch in batches]
    return images_to_row_sequences(dataset.train_images[used], config.dtype), dataset.train_labels[used], local


def small_lr_trajectory(
    preset: str,
    config: Config,
    device: str,
    dataset: Dataset,
    options: SuiteOptions,
    torch_side: TrainingSide,
    jax_side: TrainingSide,
) -> Row:
    """Trajectory at lr 1e-4: every step's loss and weights agree (float64: the math; float32: rounding's envelope)."""
    config = dataclasses.replace(config, learning_rate=checks.SMALL_LEARNING_RATE)
    weights = checks.random_weights(config)
    pool, labels, batches = train_rows(dataset, config, options.small_lr_steps)
    torch_run = torch_side.train(config, weights, pool, labels, batches)
    jax_run = jax_side.train(config, weights, pool, labels, batches)
    loss_gaps, weight_gaps = checks.trajectory_gap(torch_run, jax_run)
    rounding = None
    if config.dtype == "float32":
        exact = dataclasses.replace(config, dtype="float64")
        torch64 = torch_side.train(
            exact, {k: v.astype(np.float64) for k, v in weights.items()}, pool.astype(np.float64), labels, batches
        )
        rounding = checks.trajectory_gap(torch_run, torch64)
    loss_tol, weight_tol, text = checks.trajectory_tolerances(config.dtype, len(batches), rounding)
    passed, detail = checks.trajectory_verdict(loss_gaps, weight_gaps, loss_tol, weight_tol, config.learning_rate)
    return Row(
        preset,
        "trajectory",
        f"lr {config.learning_rate:g}",
        device,
        config.dtype,
        "torch vs jax",
        {"max_loss_gap": float(loss_gaps.max()), "max_weight_gap": float(weight_gaps.max())},
        text,
        passed,
        detail,
    )


def recipe_lr_checks(
    preset: str,
    base: Config,
    device: str,
    dataset: Dataset,
    options: SuiteOptions,
    torch_side: TrainingSide,
    jax_side: TrainingSide,
    oracle: Side,
    on_curves: Callable[[Curves], None] | None,
) -> list[Row]:
    """The trajectory at the recipe's lr (drift against rounding's own), and cross-eval of the weights those
    runs trained: logits by all three sides, and predictions on the test set by both frameworks."""
    rows: list[Row] = []
    f32, f64 = base, dataclasses.replace(base, dtype="float64")
    weights32 = checks.random_weights(f32)
    weights64 = {name: array.astype(np.float64) for name, array in weights32.items()}
    pool, labels, batches = train_rows(dataset, f32, options.recipe_lr_steps)
    torch32 = torch_side.train(f32, weights32, pool, labels, batches)
    jax32 = jax_side.train(f32, weights32, pool, labels, batches)
    if "trajectory" in options.checks:
        torch64 = torch_side.train(f64, weights64, pool.astype(np.float64), labels, batches)
        rows.append(recipe_lr_row(preset, base, device, torch32.losses, jax32.losses, torch64.losses))
        if on_curves:
            on_curves(Curves(preset, device, torch32.losses, jax32.losses, torch64.losses))
    images, labels_test = checks.test_rows(dataset, options.eval_images, "float32")
    for trained_by, run in (("torch", torch32), ("jax", jax32)):
        trained = run.weights[-1]
        if "cross-eval" in options.checks:
            subset = images[: options.images]
            results = {side.name: side.logits(f32, trained, subset) for side in (torch_side, jax_side, oracle)}
            rows += checks.compare_logits(
                preset, f32, device, results, f"logits, trained by {trained_by}", check="cross-eval"
            )
            torch_logits = torch_side.logits(f32, trained, images)
            jax_logits = jax_side.logits(f32, trained, images)
            accuracy_t, accuracy_j, same = checks.agreement(torch_logits, jax_logits, labels_test)
            near_ties = checks.disagreements_are_near_ties(torch_logits, jax_logits)
            rows.append(
                Row(
                    preset,
                    "cross-eval",
                    f"predictions, trained by {trained_by}",
                    device,
                    "float32",
                    "torch vs jax",
                    {"accuracy_torch": accuracy_t, "accuracy_jax": accuracy_j, "share_differing": 1.0 - same},
                    f"only near-ties ({checks.NEAR_TIE:g} x logit tolerance) may differ",
                    near_ties,
                    f"accuracy {accuracy_t:.4f} / {accuracy_j:.4f}, same class {same:.2%} of {len(images)}",
                )
            )
    return rows


def recipe_lr_row(
    preset: str, config: Config, device: str, torch32: np.ndarray, jax32: np.ndarray, torch64: np.ndarray
) -> Row:
    """The trajectory at the recipe's lr: the frameworks may part no sooner than ENVELOPE_SHARE of the way
    to where rounding alone parts torch from itself (a loss gap over DIVERGENCE), over these steps."""
    framework_gap, rounding_gap = np.abs(torch32 - jax32), np.abs(torch32 - torch64)
    framework_at = checks.first_step_over(framework_gap, checks.DIVERGENCE)
    rounding_at = checks.first_step_over(rounding_gap, checks.DIVERGENCE)
    steps = len(torch32)
    passed = (framework_at or steps + 1) >= checks.ENVELOPE_SHARE * (rounding_at or steps + 1)
    threshold = f"{checks.DIVERGENCE:g}"
    return Row(
        preset,
        "trajectory",
        "recipe lr",
        device,
        "float32",
        "torch vs jax vs rounding",
        {
            "max_framework_gap": float(framework_gap.max()),
            "max_rounding_gap": float(rounding_gap.max()),
            "framework_parts_at": framework_at,
            "rounding_parts_at": rounding_at,
        },
        f"gap > {threshold} no sooner than {checks.ENVELOPE_SHARE:g} x rounding's step",
        passed,
        f"lr {config.learning_rate:g}, {steps} steps: torch-jax gap > {threshold} at step "
        f"{framework_at or 'never'}, float32-float64 (torch) at step {rounding_at or 'never'}",
    )


def cross_device_rows(preset: str, dataset: Dataset, options: SuiteOptions, sides: dict[str, Side]) -> list[Row]:
    """The same random weights and images through every side on every device (`sides`: name -> side, e.g.
    torch-cpu, torch-gpu, jax-cpu, jax-gpu, numpy): the logits, every pair, float32 and float64."""
    rows: list[Row] = []
    for dtype in options.dtypes:
        config = dataclasses.replace(get_preset(preset), dtype=dtype)
        weights = checks.random_weights(config)
        images, _ = checks.test_rows(dataset, options.images, dtype)
        results = {name: side.logits(config, weights, images) for name, side in sides.items()}
        rows += checks.compare_logits(
            preset, config, "+".join(sorted({name.split("-")[-1] for name in sides})), results, "across devices"
        )
    return rows


def every_device_sides() -> dict[str, Side]:
    """torch and jax on the CPU and on the GPU, and the NumPy oracle."""
    return {
        "torch-cpu": TorchSide("cpu"),
        "torch-gpu": TorchSide("cuda"),
        "jax-cpu": JaxSide("cpu"),
        "jax-gpu": JaxSide("gpu"),
        "numpy": OracleSide(),
    }


def not_run_rows(preset: str, device: str, reason: str, options: SuiteOptions) -> list[Row]:
    return [Row(preset, check, "-", device, "-", "-", {}, "-", None, f"not run: {reason}") for check in options.checks]
