"""Run the parity checks for a preset on a device: the sides, the data, and the order of the checks.

Checks: 1 logits, 2 hidden states, 3 gradients, 4 training trajectory, 5 cross-evaluation.
(6, accuracy over seeds from full trainings, is `parity.accuracy`; it takes hours on a CPU.)
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from common.config import Config
from common.data import Dataset, images_to_row_sequences
from common.presets import get_preset
from parity import checks
from parity.checks import Row
from parity.sides import JaxSide, OracleSide, TorchSide

ALL_CHECKS = (1, 2, 3, 4, 5)
CHECK_NAMES = {1: "logits", 2: "hidden states", 3: "gradients", 4: "trajectory", 5: "cross-evaluation"}


@dataclasses.dataclass(frozen=True)
class SuiteOptions:
    checks: tuple[int, ...] = ALL_CHECKS
    images: int = 64  # real test images for checks 1-3
    small_lr_steps: int = 100  # check 4a: steps at lr 1e-4, held to a tight per-step tolerance
    recipe_lr_steps: int = 150  # check 4b: steps at the recipe's lr (drift reported against rounding's)
    eval_images: int = 10000  # check 5


@dataclasses.dataclass
class Curves:
    """Loss curves of check 4b, for the plot."""

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


def full_precision_on_gpu() -> None:
    """TF32 off in both frameworks, so that GPU results are held to the CPU tolerances."""
    import jax
    import torch

    try:  # torch >= 2.9: the fp32_precision settings (mixing them with allow_tf32 is an error)
        torch.backends.cudnn.rnn.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        torch.backends.cudnn.conv.fp32_precision = "ieee"
    except AttributeError:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    jax.config.update("jax_default_matmul_precision", "highest")


def run_preset(preset: str, dataset: Dataset, device: str, options: SuiteOptions,
               jax_side: JaxSide | None = None, on_curves: Callable[[Curves], None] | None = None,
               on_logit_gaps: Callable[[str, np.ndarray], None] | None = None) -> list[Row]:
    """Every requested check for one preset on one device ("cpu" or "gpu"), float32 and float64."""
    torch_side = TorchSide("cuda" if device == "gpu" else "cpu")
    jax_side = jax_side or JaxSide(device)
    oracle = OracleSide()
    rows: list[Row] = []
    base = get_preset(preset)
    for dtype in ("float32", "float64"):
        config = dataclasses.replace(base, dtype=dtype)
        weights = checks.random_weights(config)
        images, labels = checks.test_rows(dataset, options.images, dtype)
        if 1 in options.checks:
            results = {side.name: side.logits(config, weights, images) for side in (torch_side, jax_side, oracle)}
            rows += checks.compare_logits(preset, config, device, results, "random weights")
            if on_logit_gaps and dtype == "float32":
                on_logit_gaps(preset, (results["torch"] - results["jax"]).ravel())
        if 2 in options.checks:
            results = {side.name: side.hidden_states(config, weights, images) for side in (torch_side, jax_side, oracle)}
            rows += checks.compare_hidden_states(preset, config, device, results)
        if 3 in options.checks:
            _, torch_grads = torch_side.gradients(config, weights, images, labels)
            _, jax_grads = jax_side.gradients(config, weights, images, labels)
            rows.append(checks.compare_gradients(preset, config, device, torch_grads, jax_grads))
        if 4 in options.checks:
            rows.append(small_lr_trajectory(preset, config, device, dataset, options, torch_side, jax_side))
    if 4 in options.checks or 5 in options.checks or 1 in options.checks:
        rows += recipe_lr_checks(preset, base, device, dataset, options, torch_side, jax_side, oracle, on_curves)
    return rows


def train_rows(dataset: Dataset, config: Config, steps: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The training images the first `steps` sampler batches touch, relabelled as a compact pool."""
    batches = checks.training_batches(dataset, config, steps)
    used = np.unique(np.concatenate(batches))
    position = {index: i for i, index in enumerate(used)}
    local = [np.array([position[i] for i in batch]) for batch in batches]
    return images_to_row_sequences(dataset.train_images[used], config.dtype), dataset.train_labels[used], local


def small_lr_trajectory(preset, config, device, dataset, options, torch_side, jax_side) -> Row:
    """Check 4a: at lr 1e-4, every step's loss and weights agree (float64: 1e-12; float32: rounding's envelope)."""
    config = dataclasses.replace(config, learning_rate=checks.SMALL_LEARNING_RATE)
    weights = checks.random_weights(config)
    pool, labels, batches = train_rows(dataset, config, options.small_lr_steps)
    torch_run = torch_side.train(config, weights, pool, labels, batches)
    jax_run = jax_side.train(config, weights, pool, labels, batches)
    loss_gaps, weight_gaps = checks.trajectory_gap(torch_run, jax_run)
    if config.dtype == "float64":
        loss_tol = weight_tol = np.full(len(batches), checks.TRAJECTORY_FLOAT64)
        text = "1e-12 every step"
    else:
        exact = dataclasses.replace(config, dtype="float64")
        torch64 = torch_side.train(exact, {k: v.astype(np.float64) for k, v in weights.items()},
                                   pool.astype(np.float64), labels, batches)
        rounding_loss, rounding_weights = checks.trajectory_gap(torch_run, torch64)
        loss_tol = np.maximum(checks.ROUNDING_FACTOR * np.maximum.accumulate(rounding_loss), checks.TRAJECTORY_FLOOR)
        weight_tol = np.maximum(checks.ROUNDING_FACTOR * np.maximum.accumulate(rounding_weights), checks.TRAJECTORY_FLOOR)
        text = f"10x torch f32-f64 drift (max {loss_tol.max():.1e}, {weight_tol.max():.1e})"
    bad = np.nonzero((loss_gaps > loss_tol) | (weight_gaps > weight_tol))[0]
    detail = (f"{len(batches)} steps at lr 1e-4: loss gap max {loss_gaps.max():.2g}, weights gap max "
              f"{weight_gaps.max():.2g}")
    if len(bad):
        step = int(bad[0])
        detail += (f"; first over at step {step + 1} (loss {loss_gaps[step]:.2g} > {loss_tol[step]:.2g} or "
                   f"weights {weight_gaps[step]:.2g} > {weight_tol[step]:.2g})")
    return Row(preset, "trajectory lr 1e-4", device, config.dtype, "torch vs jax", float(loss_gaps.max()),
               float(weight_gaps.max()), text, not len(bad), detail)


def recipe_lr_checks(preset, base, device, dataset, options, torch_side, jax_side, oracle, on_curves) -> list[Row]:
    """Check 4b (drift at the recipe's lr against rounding's own), check 5 (cross-evaluation) and check 1 on
    the weights those runs trained."""
    rows: list[Row] = []
    f32, f64 = base, dataclasses.replace(base, dtype="float64")
    weights32 = checks.random_weights(f32)
    weights64 = {name: array.astype(np.float64) for name, array in weights32.items()}
    pool, labels, batches = train_rows(dataset, f32, options.recipe_lr_steps)
    torch32 = torch_side.train(f32, weights32, pool, labels, batches)
    jax32 = jax_side.train(f32, weights32, pool, labels, batches)
    if 4 in options.checks:
        torch64 = torch_side.train(f64, weights64, pool.astype(np.float64), labels, batches)
        framework_gap = np.abs(torch32.losses - jax32.losses)
        rounding_gap = np.abs(torch32.losses - torch64.losses)
        framework_at = checks.first_step_over(framework_gap, checks.DIVERGENCE)
        rounding_at = checks.first_step_over(rounding_gap, checks.DIVERGENCE)
        steps = len(batches)
        # inside the envelope: the frameworks decorrelate no sooner than half-way to when rounding alone does
        passed = (framework_at or steps + 1) >= 0.5 * (rounding_at or steps + 1)
        rows.append(Row(preset, "trajectory recipe lr", device, "float32", "torch vs jax vs rounding",
                        float(framework_gap.max()), float(rounding_gap.max()),
                        "gap > 1e-3 no sooner than half-way to rounding's", passed,
                        f"lr {base.learning_rate}, {steps} steps: torch-jax gap > 1e-3 at step {framework_at or 'never'}, "
                        f"float32-float64 (torch) at step {rounding_at or 'never'}"))
        if on_curves:
            on_curves(Curves(preset, device, torch32.losses, jax32.losses, torch64.losses))
    images, labels_test = checks.test_rows(dataset, options.eval_images, "float32")
    for trained_by, run in (("torch", torch32), ("jax", jax32)):
        trained = run.weights[-1]
        if 1 in options.checks:
            subset = images[: options.images]
            results = {side.name: side.logits(f32, trained, subset) for side in (torch_side, jax_side, oracle)}
            rows += checks.compare_logits(preset, f32, device, results, f"trained by {trained_by}")
        if 5 in options.checks:
            torch_logits = torch_side.logits(f32, trained, images)
            jax_logits = jax_side.logits(f32, trained, images)
            accuracy_t, accuracy_j, same = checks.agreement(torch_logits, jax_logits, labels_test)
            near_ties = checks.disagreements_are_near_ties(torch_logits, jax_logits)
            rows.append(Row(preset, f"cross-eval (trained by {trained_by})", device, "float32", "torch vs jax",
                            abs(accuracy_t - accuracy_j), 1.0 - same, "only near-ties may differ",
                            near_ties, f"accuracy {accuracy_t:.4f} / {accuracy_j:.4f}, same class {same:.2%} "
                                       f"of {len(images)}"))
    return rows


def not_run_rows(preset: str, device: str, reason: str, options: SuiteOptions) -> list[Row]:
    return [Row(preset, CHECK_NAMES[check], device, "-", "-", None, None, "-", None, f"not run: {reason}")
            for check in options.checks]
