"""The parity checks: each compares the sides on the same canonical weights and rows, and returns report rows.

Every tolerance is a constant below, used both ways (a vs b and b vs a are the same number), and every
label in the report is built from it. Logits and hidden states: float32 relative to max(1, the largest
value), float64 absolute. Gradients: relative to each tensor's largest gradient. Training at
SMALL_LEARNING_RATE: float64 to ABSOLUTE_FLOAT64 every step (the math); float32 within ROUNDING_FACTOR x
torch's own float32-vs-float64 drift on the same steps, since two float32 implementations each drift from
the exact result, and not by the same amount (docs/parity.md: XLA's float32 tanh on a CPU).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from common import metrics
from common.config import Config
from common.data import Dataset, images_to_row_sequences
from common.sampler import BatchSampler
from common.weights import Weights, initial_weights
from parity.sides import Trajectory

# The checks by name, with the numbers the CLI also accepts. "accuracy" (full trainings over seeds) is
# `parity.accuracy`, run only when named; so is "port": the preset declared as a port (`parity.preset_ports`)
# and put through `parity.prove`, the API a user's own model goes through.
CHECKS = {"logits": 1, "hidden-states": 2, "gradients": 3, "trajectory": 4, "cross-eval": 5, "accuracy": 6, "port": 7}
SUITE_CHECKS = ("logits", "hidden-states", "gradients", "trajectory", "cross-eval")

LOGIT_RTOL_FLOAT32 = 1e-5  # float32 logits and hidden states: relative to max(1, the largest value)
ABSOLUTE_FLOAT64 = 1e-12  # float64 logits, hidden states, and every step of a training trajectory
GRADIENT_RTOL = {"float32": 1e-4, "float64": 1e-10}  # relative to each tensor's largest gradient ...
GRADIENT_FLOOR = 1e-3  # ... or to this share of the largest gradient of all, if more (a gradient that is 0 in exact
# arithmetic, e.g. an attention key bias's, is rounding noise in both frameworks: noise against noise)
ROUNDING_FACTOR = 10.0  # float32 trajectory: framework drift allowed, in units of torch's float32-vs-float64 drift
TRAJECTORY_FLOOR = 1e-6  # ... but never below this
SMALL_LEARNING_RATE = 1e-4  # the trajectory check's tight part trains at this learning rate
DIVERGENCE = 1e-3  # a loss gap this large means two runs have decorrelated
ENVELOPE_SHARE = 0.5  # at the recipe's lr the frameworks may part no sooner than this share of rounding's steps
NEAR_TIE = 2.0  # cross-eval: images may be classed differently when their top two logits are this many tolerances apart

# What each check's `Row.figures` hold (every figure a float, or an int step, or None).
FIGURES = {
    "logits": ("max_abs_diff", "scaled_diff"),  # scaled: max_abs_diff / max(1, max |logit|)
    "hidden-states": ("max_abs_diff",),
    "gradients": ("max_abs_diff", "worst_relative_diff"),  # relative: to that tensor's max |gradient|
    "trajectory": ("max_loss_gap", "max_weight_gap"),  # lr 1e-4, every step
    "trajectory-recipe": ("max_framework_gap", "max_rounding_gap", "framework_parts_at", "rounding_parts_at"),
    "cross-eval": ("accuracy_torch", "accuracy_jax", "share_differing"),
}


FIGURE_LABELS = {
    "max_abs_diff": "max abs",
    "scaled_diff": "scaled",
    "worst_relative_diff": "worst relative",
    "max_loss_gap": "loss gap",
    "max_weight_gap": "weight gap",
    "max_framework_gap": "torch-jax gap",
    "max_rounding_gap": "f32-f64 gap",
    "framework_parts_at": "torch-jax parts at",
    "rounding_parts_at": "f32-f64 parts at",
    "accuracy_torch": "accuracy torch",
    "accuracy_jax": "accuracy jax",
    "share_differing": "differing",
}


@dataclasses.dataclass
class Row:
    """One line of the report: one comparison of one check, on one preset, device and dtype."""

    preset: str
    check: str  # a key of CHECKS
    case: str  # which part of the check, e.g. "random weights", "lr 1e-4", "trained by torch"
    device: str
    dtype: str
    compared: str  # e.g. "torch vs numpy"
    figures: dict[str, float | int | None]  # named per check: FIGURES
    tolerance: str
    passed: bool | None  # None: not run (e.g. no GPU)
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def format_figures(row: Row) -> str:
    """`max abs 2.40e-06, scaled 3.40e-07`: the row's named figures."""

    def value(figure: float | int | None) -> str:
        return "-" if figure is None else str(figure) if isinstance(figure, int) else f"{figure:.2e}"

    return ", ".join(f"{FIGURE_LABELS[name]} {value(figure)}" for name, figure in row.figures.items())


def logit_tolerance(dtype: str, scale: float) -> tuple[float, str]:
    """The logits' and hidden states' tolerance for `dtype` and its label."""
    if dtype == "float32":
        return LOGIT_RTOL_FLOAT32 * scale, f"{LOGIT_RTOL_FLOAT32:g} x {scale:.3g}"
    return ABSOLUTE_FLOAT64, f"{ABSOLUTE_FLOAT64:g} abs"


def random_weights(config: Config, seed: int = 1) -> Weights:
    """Canonical initial weights plus noise of a tenth of their bound: no two units or gates alike.

    The noise breaks the identity of the `rnn` preset's recurrent matrices (and every symmetry a gate-order
    bug could hide behind) while keeping them well-conditioned: I + N(0, 0.1) on 150 units would have a
    spectral radius near 2 and amplify float32 rounding 100-fold over 28 steps.
    """
    rng = np.random.default_rng(seed)
    scale = 0.1 / np.sqrt(config.hidden_size)
    return {
        name: (array + rng.normal(0, scale, array.shape)).astype(array.dtype)
        for name, array in initial_weights(config, seed).items()
    }


def test_rows(dataset: Dataset, count: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` real test images as row sequences, and their labels."""
    return images_to_row_sequences(dataset.test_images[:count], dtype), dataset.test_labels[:count]


def compare_logits(
    preset: str, config: Config, device: str, results: dict[str, np.ndarray], case: str, check: str = "logits"
) -> list[Row]:
    """Every pair among the sides' logits; float32 tolerance scales with the largest logit."""
    rows, names = [], list(results)
    reference = results.get("numpy", next(iter(results.values())))
    scale = max(1.0, float(np.abs(reference).max()))
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            gap = float(np.abs(results[a].astype(np.float64) - results[b]).max())
            tolerance, text = logit_tolerance(config.dtype, scale)
            rows.append(
                Row(
                    preset,
                    check,
                    case,
                    device,
                    config.dtype,
                    f"{a} vs {b}",
                    {"max_abs_diff": gap, "scaled_diff": gap / scale},
                    text,
                    gap <= tolerance,
                )
            )
    return rows


def first_divergence(a: list[np.ndarray], b: list[np.ndarray], tolerance: float, bidirectional: bool) -> str | None:
    """The first (layer, step, direction, unit) where two sets of layer outputs differ by more than `tolerance`."""
    for layer, (x, y) in enumerate(zip(a, b, strict=True)):
        diff = np.abs(x.astype(np.float64) - y)  # [batch, time, directions * hidden]
        steps = diff.shape[1]
        per_direction = diff.reshape(diff.shape[0], steps, 2 if bidirectional else 1, -1).max(axis=0)
        for step in range(steps):
            for direction in range(per_direction.shape[1]):
                over = np.nonzero(per_direction[step, direction] > tolerance)[0]
                if len(over):
                    unit = int(over[0])
                    name = "backward" if direction else "forward"
                    return (
                        f"layer {layer}, {name}, step {step}, unit {unit}: "
                        f"|diff| {per_direction[step, direction, unit]:.3g} > {tolerance:.3g}"
                    )
    return None


def compare_hidden_states(preset: str, config: Config, device: str, results: dict[str, list[np.ndarray]]) -> list[Row]:
    """Every layer, direction and time step; a failure names the first place it shows."""
    rows, names = [], list(results)
    tolerance, text = logit_tolerance(config.dtype, 1.0)  # |h| <= 1: the scale is 1
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pairs = zip(results[a], results[b], strict=True)
            gap = max(float(np.abs(x.astype(np.float64) - y).max()) for x, y in pairs)
            where = first_divergence(results[a], results[b], tolerance, config.bidirectional)
            rows.append(
                Row(
                    preset,
                    "hidden-states",
                    "every layer, step and unit",
                    device,
                    config.dtype,
                    f"{a} vs {b}",
                    {"max_abs_diff": gap},
                    text,
                    where is None,
                    where or "",
                )
            )
    return rows


def max_gap(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b|, in float64 (0 for empty arrays)."""
    return float(np.abs(a.astype(np.float64) - b).max()) if a.size else 0.0


def gradient_gaps(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> tuple[float, float, str]:
    """(largest absolute gap, worst gap relative to its tensor's largest `reference` gradient, that tensor).

    A tensor's scale is never below GRADIENT_FLOOR x the largest gradient of all tensors.
    """
    worst, worst_name, max_abs = 0.0, "", 0.0
    largest = {name: float(np.abs(g).max()) if g.size else 0.0 for name, g in reference.items()}
    floor = GRADIENT_FLOOR * max(largest.values(), default=0.0)
    for name, gradient in reference.items():
        gap = max_gap(gradient, other[name])
        relative = gap / max(largest[name], floor, 1e-30)
        max_abs = max(max_abs, gap)
        if relative > worst or not worst_name:
            worst, worst_name = relative, name
    return max_abs, worst, worst_name


def compare_gradients(preset: str, config: Config, device: str, torch_grads: Weights, jax_grads: Weights) -> Row:
    """Per canonical tensor, relative to its largest gradient."""
    rtol = GRADIENT_RTOL[config.dtype]
    max_abs, worst, worst_name = gradient_gaps(torch_grads, jax_grads)
    return Row(
        preset,
        "gradients",
        "every tensor",
        device,
        config.dtype,
        "torch vs jax",
        {"max_abs_diff": max_abs, "worst_relative_diff": worst},
        f"{rtol:g} rel",
        worst <= rtol,
        f"worst tensor {worst_name}",
    )


def trajectory_tolerances(
    dtype: str, steps: int, rounding: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-step tolerances (loss, weights) for two frameworks' training runs, and their label.

    float64: ABSOLUTE_FLOAT64 every step (the math). float32: ROUNDING_FACTOR x `rounding`, torch's own
    float32-vs-float64 gaps (loss, weights) on the same steps, running maximum, never below TRAJECTORY_FLOOR.
    """
    if dtype == "float64":
        exact = np.full(steps, ABSOLUTE_FLOAT64)
        return exact, exact, f"{ABSOLUTE_FLOAT64:g} every step"
    if rounding is None:
        raise ValueError("a float32 trajectory needs torch's float32-vs-float64 gaps as its yardstick")
    loss_tol, weight_tol = (
        np.maximum(ROUNDING_FACTOR * np.maximum.accumulate(gaps), TRAJECTORY_FLOOR) for gaps in rounding
    )
    return (
        loss_tol,
        weight_tol,
        (f"{ROUNDING_FACTOR:g}x torch f32-f64 drift (max {loss_tol.max():.1e}, {weight_tol.max():.1e})"),
    )


def trajectory_verdict(
    loss_gaps: np.ndarray, weight_gaps: np.ndarray, loss_tol: np.ndarray, weight_tol: np.ndarray, learning_rate: float
) -> tuple[bool, str]:
    """Whether every step is within its tolerances, and a detail naming the first step over."""
    bad = np.nonzero((loss_gaps > loss_tol) | (weight_gaps > weight_tol))[0]
    detail = (
        f"{len(loss_gaps)} steps at lr {learning_rate:g}: loss gap max {loss_gaps.max():.2g}, "
        f"weights gap max {weight_gaps.max():.2g}"
    )
    if len(bad):
        step = int(bad[0])
        detail += (
            f"; first over at step {step + 1} (loss {loss_gaps[step]:.2g} > {loss_tol[step]:.2g} or "
            f"weights {weight_gaps[step]:.2g} > {weight_tol[step]:.2g})"
        )
    return not len(bad), detail


def training_batches(dataset: Dataset, config: Config, steps: int) -> list[np.ndarray]:
    """The first `steps` index batches of the shared sampler (the trainers' own batches)."""
    sampler = BatchSampler(len(dataset.train_images), config.batch_size, config.seed)
    return [sampler.batch(step // sampler.steps_per_epoch, step % sampler.steps_per_epoch) for step in range(steps)]


def trajectory_gap(a: Trajectory, b: Trajectory) -> tuple[np.ndarray, np.ndarray]:
    """Per step: |loss_a - loss_b| and the max |weight difference| after that step."""
    losses = np.abs(a.losses - b.losses)
    weights = np.array(
        [
            max(float(np.abs(x[name].astype(np.float64) - y[name]).max()) for name in x)
            for x, y in zip(a.weights, b.weights, strict=True)
        ]
    )
    return losses, weights


def first_step_over(gaps: np.ndarray, threshold: float) -> int | None:
    over = np.nonzero(gaps > threshold)[0]
    return int(over[0]) + 1 if len(over) else None


def agreement(logits_a: np.ndarray, logits_b: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """(accuracy a, accuracy b, share of images with the same predicted class)."""
    same = float((metrics.predictions(logits_a) == metrics.predictions(logits_b)).mean())
    return metrics.accuracy(logits_a, labels), metrics.accuracy(logits_b, labels), same


def disagreements_are_near_ties(logits_a: np.ndarray, logits_b: np.ndarray) -> bool:
    """Every image the two sides classify differently is a near-tie: its top two logits within NEAR_TIE tolerances."""
    differ = metrics.predictions(logits_a) != metrics.predictions(logits_b)
    if not differ.any():
        return True
    tolerance, _ = logit_tolerance("float32", max(1.0, float(np.abs(logits_a).max())))
    top_two = np.sort(logits_a[differ], axis=1)[:, -2:]
    return bool((top_two[:, 1] - top_two[:, 0] <= NEAR_TIE * tolerance).all())
