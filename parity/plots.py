"""PNG figures for the parity report: the recipe-lr loss curves, the distribution of logit differences, check 6."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Literal

import numpy as np

from common.outputs import save_figure
from parity.compare import DIVERGENCE

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from parity.accuracy_table import AccuracyRow


@dataclasses.dataclass
class Curves:
    """Loss curves of the trajectory check at the recipe's lr, for the plot."""

    preset: str
    device: str
    torch32: np.ndarray
    jax32: np.ndarray
    torch64: np.ndarray


def _pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def gap_for_log_axis(gap: np.ndarray) -> np.ndarray:
    """|gap| with exact agreement (0) left out rather than drawn as a dip to some small number."""
    absolute = np.abs(gap)
    shown: np.ndarray = np.where(absolute > 0, absolute, np.nan)
    return shown


def trajectories_figure(curves: list[Curves]) -> Figure:
    """Per preset: torch and jax losses overlaid at the recipe's lr, and the two gaps (framework vs rounding)."""
    plt = _pyplot()
    figure: Figure
    figure, axes = plt.subplots(2, len(curves), figsize=(max(7.0, 4.2 * len(curves)), 6.5), squeeze=False)
    for column, curve in enumerate(curves):
        steps = np.arange(1, len(curve.torch32) + 1)
        top, bottom = axes[0, column], axes[1, column]
        top.plot(steps, curve.torch32, label="torch float32", linewidth=1.6)
        top.plot(steps, curve.jax32, label="jax float32", linewidth=1.0, linestyle="--")
        top.set_title(f"{curve.preset} ({curve.device})")
        top.set_xlabel("step")
        top.set_ylabel("training loss")
        top.legend(fontsize=8)
        # steps where the two agree exactly have no point on the log axis
        bottom.semilogy(steps, gap_for_log_axis(curve.torch32 - curve.jax32), label="|torch - jax| (float32)")
        bottom.semilogy(steps, gap_for_log_axis(curve.torch32 - curve.torch64), label="|float32 - float64| (torch)")
        bottom.axhline(
            DIVERGENCE, color="grey", linewidth=0.8, linestyle=":", label=f"{DIVERGENCE:g}: the runs have parted"
        )
        bottom.set_xlabel("step")
        bottom.set_ylabel("loss gap")
        bottom.legend(fontsize=8)
    figure.suptitle("Same weights and batches at the recipe's lr:\nframework drift vs rounding drift", fontsize=11)
    figure.tight_layout()
    return figure


def plot_trajectories(curves: list[Curves], path: Path) -> Path | None:
    """Write `trajectories_figure` to `path` and return it (None, nothing written, without curves)."""
    if not curves:
        return None
    figure = trajectories_figure(curves)
    save_figure(figure, path, dpi=110)
    _pyplot().close(figure)
    return path


def logit_gaps_figure(gaps: dict[str, np.ndarray], images: int) -> Figure:
    """Histogram of torch - jax logit differences (float32, random weights), one series per preset."""
    plt = _pyplot()
    figure: Figure
    figure, axis = plt.subplots(figsize=(7, 4))
    limit = max(float(np.abs(g).max()) for g in gaps.values()) or 1e-9
    bins = np.linspace(-limit, limit, 61)
    for preset, gap in gaps.items():
        axis.hist(gap, bins=bins, histtype="step", label=preset, linewidth=1.2)
    axis.set_xlabel("torch logit - jax logit (float32, same canonical weights)")
    axis.set_ylabel("count")
    axis.set_title(f"Logit differences on {images} real MNIST test images")
    axis.legend(fontsize=9)
    figure.tight_layout()
    return figure


def plot_logit_gaps(gaps: dict[str, np.ndarray], path: Path, images: int) -> Path | None:
    """Write `logit_gaps_figure` to `path` and return it (None, nothing written, without gaps)."""
    if not gaps:
        return None
    figure = logit_gaps_figure(gaps, images)
    save_figure(figure, path, dpi=110)
    _pyplot().close(figure)
    return path


SeriesKey = Literal["torch", "jax", "torch64", "jax64", "torch_native", "jax_native"]
GapKey = Literal["gap_torch_jax_pp", "gap_rounding_pp", "gap_jax_rounding_pp"]
CHECK6_SERIES: tuple[tuple[SeriesKey, str, str, bool], ...] = (  # summary key, label, colour, filled
    ("torch", "torch (shared init)", "tab:blue", True),
    ("jax", "jax (shared init)", "tab:orange", True),
    ("torch64", "torch float64 (shared init)", "tab:green", True),
    ("jax64", "jax float64 (shared init)", "tab:red", True),
    ("torch_native", "torch (own init)", "tab:blue", False),
    ("jax_native", "jax (own init)", "tab:orange", False),
)


def plot_check6(rows: list[AccuracyRow], path: Path, tolerance_pp: float) -> None:
    """Check 6: every seed's test accuracy per preset and run, and the per-seed gaps (framework vs rounding)."""
    if not rows:
        return
    plt = _pyplot()
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(max(10.0, 2.4 * len(rows) + 4), 5.6), gridspec_kw={"width_ratios": [3, 2]}
    )
    width = 0.8 / len(CHECK6_SERIES)
    for index, row in enumerate(rows):
        for offset, (key, label, colour, filled) in enumerate(CHECK6_SERIES):
            values = row[key]
            if not values:
                continue
            x = index - 0.4 + width * (offset + 0.5)
            left.scatter(
                [x] * len(values),
                values,
                s=18,
                label=label if index == 0 else None,
                facecolors=colour if filled else "none",
                edgecolors=colour,
                linewidths=1.0,
            )
            left.hlines(np.mean(values), x - width / 2, x + width / 2, colors=colour, linewidth=2)
        left.hlines(
            row["tutorial_reported"],
            index - 0.45,
            index + 0.45,
            colors="black",
            linestyles="--",
            linewidth=1,
            label="tutorial reports" if index == 0 else None,
        )
        left.hlines(
            row["tutorial_here"],
            index - 0.45,
            index + 0.45,
            colors="grey",
            linestyles=":",
            linewidth=1.5,
            label="tutorial's code, one seed, here" if index == 0 else None,
        )
    left.set_xticks(range(len(rows)), [row["preset"] for row in rows])
    left.set_ylabel("test accuracy (%), 10,000 images")
    left.set_title("Every seed's full training (bars: means)")
    left.plot([], [], color="black", linewidth=2, label="bars: the mean over the seeds")
    left.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=4, frameon=False)
    for index, row in enumerate(rows):
        gap_series: tuple[tuple[float, GapKey, str, str], ...] = (
            (-0.2, "gap_torch_jax_pp", "tab:purple", "torch - jax (float32)"),
            (0.0, "gap_rounding_pp", "tab:green", "torch float32 - float64"),
            (0.2, "gap_jax_rounding_pp", "tab:red", "jax float32 - float64"),
        )
        for shift, gap_key, colour, label in gap_series:
            values = [v for v in row[gap_key] if v is not None]
            if values:
                right.scatter(
                    [index + shift] * len(values), values, s=18, color=colour, label=label if index == 0 else None
                )
                right.hlines(np.mean(values), index + shift - 0.08, index + shift + 0.08, colors=colour, linewidth=2)
    right.axhline(0, color="grey", linewidth=0.8)
    right.axhspan(
        -tolerance_pp,
        tolerance_pp,
        color="tab:purple",
        alpha=0.08,
        label=f"tolerance on the mean torch - jax gap (+-{tolerance_pp} pp)",
    )
    right.set_xticks(range(len(rows)), [row["preset"] for row in rows])
    right.set_ylabel("per-seed accuracy gap (percentage points)")
    right.set_title("Framework gap vs rounding's own gap (bars: means)")
    right.plot([], [], color="black", linewidth=2, label="bars: the mean over the seeds")
    right.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=1, frameon=False)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(figure, path, dpi=110)
    plt.close(figure)
