"""PNG figures for the parity report: check 4b's loss curves, and the distribution of logit differences."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def plot_trajectories(curves: list, path: Path) -> None:
    """Per preset: torch and Flax losses overlaid at the recipe's lr, and the two gaps (framework vs rounding)."""
    if not curves:
        return
    plt = _pyplot()
    figure, axes = plt.subplots(2, len(curves), figsize=(max(7.0, 4.2 * len(curves)), 6.5), squeeze=False)
    for column, curve in enumerate(curves):
        steps = np.arange(1, len(curve.torch32) + 1)
        top, bottom = axes[0, column], axes[1, column]
        top.plot(steps, curve.torch32, label="torch float32", linewidth=1.6)
        top.plot(steps, curve.jax32, label="flax float32", linewidth=1.0, linestyle="--")
        top.set_title(f"{curve.preset} ({curve.device})")
        top.set_xlabel("step")
        top.set_ylabel("training loss")
        top.legend(fontsize=8)
        # + 1e-12 so that steps where the two agree exactly stay on the log axis
        bottom.semilogy(steps, np.abs(curve.torch32 - curve.jax32) + 1e-12, label="|torch - flax| (float32)")
        bottom.semilogy(steps, np.abs(curve.torch32 - curve.torch64) + 1e-12, label="|float32 - float64| (torch)")
        bottom.axhline(1e-3, color="grey", linewidth=0.8, linestyle=":")
        bottom.set_xlabel("step")
        bottom.set_ylabel("loss gap")
        bottom.legend(fontsize=8)
    figure.suptitle("Same weights and batches at the recipe's lr:\nframework drift vs rounding drift", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_logit_gaps(gaps: dict[str, np.ndarray], path: Path) -> None:
    """Histogram of torch - flax logit differences (float32, random weights), one series per preset."""
    if not gaps:
        return
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    limit = max(float(np.abs(g).max()) for g in gaps.values()) or 1e-9
    bins = np.linspace(-limit, limit, 61)
    for preset, gap in gaps.items():
        axis.hist(gap, bins=bins, histtype="step", label=preset, linewidth=1.2)
    axis.set_xlabel("torch logit - flax logit (float32, same canonical weights)")
    axis.set_ylabel("count")
    axis.set_title("Logit differences on 64 real MNIST test images")
    axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
