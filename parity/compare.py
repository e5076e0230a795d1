"""The comparison core: tolerances, report rows, gaps and verdicts, shared by the preset suite and the port API.

Every verdict in `python -m parity` and in `check_port` is made here, by one of three comparisons:
- `compare_outputs`: two arrays (logits, hidden states, a submodule's output). float32 relative to
  max(1, the largest reference value), float64 absolute (ABSOLUTE_FLOAT64, the math). A failure says where
  the worst gap is and how many values are over.
- `compare_gradients`: named gradients, each relative to its own tensor's largest gradient (never below
  GRADIENT_FLOOR x the largest of all). A failure names the worst tensor and how many are over.
- `compare_trajectories`: the per-step loss and weight gaps of two training runs. float64: ABSOLUTE_FLOAT64
  every step; float32: within ROUNDING_FACTOR x the reference framework's own float32-vs-float64 drift on
  the same steps (two float32 implementations each drift from the exact result, and not by the same amount;
  docs/parity.md: XLA's float32 tanh on a CPU). A failure names the first step over.
Tolerances are used both ways (a vs b is b vs a). Nothing here knows a preset, a dataset or a framework.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

Weights = dict[str, np.ndarray]  # a flat dict of named arrays (canonical names, or Flax paths)

OUTPUT_RTOL_FLOAT32 = 1e-5  # float32 outputs and hidden states: relative to max(1, the largest value)
ABSOLUTE_FLOAT64 = 1e-12  # float64 outputs, hidden states, and every step of a training trajectory
GRADIENT_RTOL = {"float32": 1e-4, "float64": 1e-10}  # relative to each tensor's largest gradient ...
GRADIENT_FLOOR = 1e-3  # ... or to this share of the largest gradient of all, if more (a gradient that is 0 in exact
# arithmetic, e.g. an attention key bias's, is rounding noise in both frameworks: noise against noise)
ROUNDING_FACTOR = 10.0  # float32 trajectory: framework drift allowed, in units of the float32-vs-float64 drift
TRAJECTORY_FLOOR = 1e-6  # ... but never below this
SMALL_LEARNING_RATE = 1e-4  # trajectories held to the tight per-step tolerance train at this learning rate

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
    """One line of a report: one comparison of one check, on one preset (or port), device and dtype."""

    preset: str  # the preset, or the port's name
    check: str
    case: str  # which part of the check, e.g. "random weights", "lr 0.0001", "conv1 (flax conv1)"
    device: str
    dtype: str
    compared: str  # e.g. "torch vs numpy"
    figures: dict[str, float | int | None]  # named as in FIGURE_LABELS (every figure a float, an int step or None)
    tolerance: str
    passed: bool | None  # None: not run (e.g. no GPU), or not judged
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RESULT_WORDS = {True: "pass", False: "FAIL", None: "-"}


def format_figures(row: Row) -> str:
    """`max abs 2.40e-06, scaled 3.40e-07`: the row's named figures."""

    def value(figure: float | int | None) -> str:
        return "-" if figure is None else str(figure) if isinstance(figure, int) else f"{figure:.2e}"

    return ", ".join(f"{FIGURE_LABELS[name]} {value(figure)}" for name, figure in row.figures.items())


def first_divergence(rows: Sequence[Row], locating: Iterable[str] = ()) -> str | None:
    """Where two computations first part: the first failing row of a `locating` check (layer by layer, in
    the order the model ran), float64's before float32's (a gap in float64 is a difference in the math);
    else the first failing row of any check. `float64 submodules: conv1 (flax conv1): |diff| 0.3 > 1e-12 ...`"""
    failed = [row for row in rows if row.passed is False]
    located = [row for row in failed if row.check in set(locating)]
    for row in [r for r in located if r.dtype == "float64"] + located + failed:
        return f"{row.dtype} {row.check}: {row.case}: {row.detail}"
    return None


# ---- outputs -------------------------------------------------------------------------------------------------


def output_tolerance(dtype: str, scale: float, float64_relative: bool = False) -> tuple[float, str]:
    """The tolerance for outputs of `dtype` whose largest value is `scale` (at least 1), and its label. float64
    is absolute, or with `float64_relative` relative to `scale` as float32 is (a port's BatchNorm output of
    scale 7, normalised by statistics summed over 50,000 values, rounds to ~2e-12 in float64)."""
    if dtype == "float64":
        if float64_relative and scale > 1:
            return ABSOLUTE_FLOAT64 * scale, f"{ABSOLUTE_FLOAT64:g} x {scale:.3g}"
        return ABSOLUTE_FLOAT64, f"{ABSOLUTE_FLOAT64:g} abs"
    return OUTPUT_RTOL_FLOAT32 * scale, f"{OUTPUT_RTOL_FLOAT32:g} x {scale:.3g}"


def output_scale(reference: np.ndarray) -> float:
    """max(1, the largest |value|): float32 tolerances are relative to it."""
    return max(1.0, float(np.abs(reference).max()) if reference.size else 1.0)


def max_gap(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b|, in float64 (0 for empty arrays)."""
    return float(np.abs(a.astype(np.float64) - b).max()) if a.size else 0.0


def count_nonfinite(array: np.ndarray) -> int:
    return int(array.size - np.isfinite(array).sum()) if np.issubdtype(array.dtype, np.inexact) else 0


def where_over(a: np.ndarray, b: np.ndarray, tolerance: float) -> str:
    """`at (3, 7), 12 of 640 values over`: the worst gap's index and how many values exceed `tolerance`."""
    diff = np.abs(a.astype(np.float64) - b)
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    return f"at {tuple(int(i) for i in worst)}, {int((diff > tolerance).sum())} of {diff.size} values over"


def compare_outputs(
    row: Row,
    reference: np.ndarray,
    other: np.ndarray,
    scale: float | None = None,
    names: str = "torch vs flax",
    float64_relative: bool = False,
) -> Row:
    """`row` judged on max |reference - other| (float32: relative to `scale`, by default the reference's;
    float64 too with `float64_relative`)."""
    if reference.shape != other.shape:
        a, b = names.split(" vs ")
        return dataclasses.replace(
            row, tolerance="same shape", passed=False, detail=f"{a} {reference.shape} vs {b} {other.shape}"
        )
    scale = output_scale(reference) if scale is None else scale
    tolerance, text = output_tolerance(row.dtype, scale, float64_relative)
    gap = max_gap(reference, other)
    passed = gap <= tolerance
    detail = "" if passed else f"|diff| {gap:.3g} > {tolerance:.3g} {where_over(reference, other, tolerance)}"
    sides = zip(names.split(" vs "), (count_nonfinite(reference), count_nonfinite(other)), strict=True)
    detail += "".join(f" ({side} has {count} NaN or inf)" for side, count in sides if count)
    return dataclasses.replace(
        row,
        figures={"max_abs_diff": gap, "scaled_diff": gap / scale},
        tolerance=text,
        passed=passed,
        detail="; ".join(part for part in (row.detail, detail) if part),
    )


# ---- gradients -----------------------------------------------------------------------------------------------


def gradient_gaps(reference: Weights, other: Weights) -> dict[str, tuple[float, float]]:
    """Per tensor: (largest absolute gap, that gap relative to the tensor's largest `reference` gradient).

    A tensor's scale is never below GRADIENT_FLOOR x the largest gradient of all tensors.
    """
    largest = {name: float(np.abs(g).max()) if g.size else 0.0 for name, g in reference.items()}
    floor = GRADIENT_FLOOR * max(largest.values(), default=0.0)
    gaps = {}
    for name, gradient in reference.items():
        gap = max_gap(gradient, other[name])
        gaps[name] = (gap, gap / max(largest[name], floor, 1e-30))
    return gaps


def compare_gradients(row: Row, reference: Weights, other: Weights, rounding: dict[str, float] | None = None) -> Row:
    """`row` judged on every tensor's gradient relative to its own scale; the detail names the worst tensor.

    `rounding` (float32 only): each tensor's own float32-vs-float64 relative gap in the reference framework.
    A tensor whose float32 gradient rounds further than GRADIENT_RTOL from the exact one (BatchNorm's batch
    statistics in train mode) is then allowed ROUNDING_FACTOR x that, as trajectories are."""
    rtol = GRADIENT_RTOL[row.dtype]
    gaps = gradient_gaps(reference, other)
    allowed = {name: max(rtol, ROUNDING_FACTOR * (rounding or {}).get(name, 0.0)) for name in gaps}
    ratio = {name: gaps[name][1] / allowed[name] for name in gaps}
    worst_name = max(ratio, key=lambda name: ratio[name]) if gaps else ""
    worst = gaps[worst_name][1] if gaps else 0.0
    over = sum(value > 1 for value in ratio.values())
    detail = f"worst {worst_name}" + (f", {over} of {len(gaps)} tensors over" if over else "")
    widened = max(allowed.values(), default=rtol)
    tolerance = f"{rtol:g} rel" + (f", or 10x torch's f32-f64 gap (max {widened:.1e})" if widened > rtol else "")
    return dataclasses.replace(
        row,
        figures={"max_abs_diff": max((gap for gap, _ in gaps.values()), default=0.0), "worst_relative_diff": worst},
        tolerance=tolerance,
        passed=all(value <= 1 for value in ratio.values()),
        detail="; ".join(part for part in (detail, row.detail) if part),
    )


# ---- training trajectories ---------------------------------------------------------------------------------

DIVERGENCE = 1e-3  # a loss gap this large means two runs have decorrelated (the recipe-lr trajectory)


def weight_gap(a: Weights, b: Weights) -> float:
    """The largest |difference| over every named array two weight sets share."""
    return max((max_gap(a[name], b[name]) for name in a), default=0.0)


def trajectory_tolerances(
    dtype: str, steps: int, rounding: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-step tolerances (loss, weights) for two frameworks' training runs, and their label.

    float64: ABSOLUTE_FLOAT64 every step (the math). float32: ROUNDING_FACTOR x `rounding`, one framework's
    own float32-vs-float64 gaps (loss, weights) on the same steps, running maximum, never below TRAJECTORY_FLOOR.
    """
    if dtype == "float64":
        exact = np.full(steps, ABSOLUTE_FLOAT64)
        return exact, exact, f"{ABSOLUTE_FLOAT64:g} every step"
    if rounding is None:
        raise ValueError("a float32 trajectory needs the float32-vs-float64 gaps as its yardstick")
    loss_tol, weight_tol = (
        np.maximum(ROUNDING_FACTOR * np.maximum.accumulate(gaps), TRAJECTORY_FLOOR) for gaps in rounding
    )
    return (
        loss_tol,
        weight_tol,
        f"{ROUNDING_FACTOR:g}x f32-f64 drift (max {loss_tol.max():.1e}, {weight_tol.max():.1e})",
    )


def compare_trajectories(
    row: Row,
    gaps: tuple[np.ndarray, np.ndarray],
    learning_rate: float,
    rounding: tuple[np.ndarray, np.ndarray] | None = None,
) -> Row:
    """`row` judged on every step's loss and weight gaps (`gaps`); float32 needs `rounding`, the reference
    framework's own float32-vs-float64 gaps on the same steps. The detail names the first step over."""
    loss_gaps, weight_gaps = gaps
    loss_tol, weight_tol, text = trajectory_tolerances(row.dtype, len(loss_gaps), rounding)
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
    return dataclasses.replace(
        row,
        figures={"max_loss_gap": float(loss_gaps.max()), "max_weight_gap": float(weight_gaps.max())},
        tolerance=text,
        passed=not len(bad),
        detail=detail,
    )


def first_step_over(gaps: np.ndarray, threshold: float) -> int | None:
    """The first step (counting from 1) whose gap exceeds `threshold`, or None."""
    over = np.nonzero(gaps > threshold)[0]
    return int(over[0]) + 1 if len(over) else None


# ---- weights to compare on -------------------------------------------------------------------------------------


def noisy_weights(weights: Weights, seed: int, share: float = 0.1, scale: float | None = None) -> Weights:
    """Each float tensor plus Gaussian noise: of `scale` when given, else of `share` x the tensor's own spread
    (or of its magnitude, if constant). No two units or gates alike, no unit LayerNorm scale for a bug to
    hide behind; integer tensors (counters) are kept."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, array in weights.items():
        if not np.issubdtype(array.dtype, np.floating) or not array.size:
            out[name] = array
            continue
        spread = (
            scale if scale is not None else share * (float(array.std()) or 0.1 * max(float(np.abs(array).mean()), 0.1))
        )
        out[name] = (array + rng.normal(0, spread, array.shape)).astype(array.dtype)
    return out
