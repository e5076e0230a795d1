"""`python -m bench --sweep batch|hidden`: both trainers' images/s against the batch or the hidden size, plotted."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from bench.runners import bench_preset
from common.console import progress
from common.outputs import save_figure
from common.presets import get_preset

SWEEPS = {"batch": (32, 64, 128, 256, 512, 1024), "hidden": (64, 128, 256, 512)}


def sweep(
    kind: str,
    preset: str,
    dataset,
    device: str,
    reps: int,
    images: int,
    bound: float | None,
    sizes: Sequence[int] | None = None,
) -> list[dict]:
    """Both trainers (no tutorial loop) at each size: `images` training images per timed repetition. A batch
    sweep leaves evaluation out: it runs in batches of its own (`common.trainer.EVAL_BATCH`) whatever the
    training batch, so its figure would be the main table's again; a hidden sweep times it at each size."""
    base = get_preset(preset)
    rows = []
    for size in progress(sizes or SWEEPS[kind], f"sweep {kind}"):
        if kind == "batch":
            config = dataclasses.replace(base, batch_size=size)
        else:
            config = dataclasses.replace(base, hidden_size=size)
        steps = max(2, images // config.batch_size)
        rows_of_size = bench_preset(
            preset, dataset, steps, reps, device, bound=bound, config=config, tutorial=False, evaluate=kind != "batch"
        )
        for row in rows_of_size:
            if row["runner"] != "(process)":
                rows.append({**row, "sweep": kind, "size": size})
    return rows


def plot_sweep(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(r["sweep"] for r in rows))
    figure, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4.2), squeeze=False)
    for axis, kind in zip(axes[0], kinds, strict=True):
        for runner, style in (("torch trainer", "o-"), ("jax trainer", "s--")):
            mine = [r for r in rows if r["sweep"] == kind and r["runner"] == runner]
            axis.plot([r["size"] for r in mine], [r["images_per_s"] for r in mine], style, label=runner.split()[0])
        first = next(r for r in rows if r["sweep"] == kind)
        axis.set_xscale("log", base=2)
        if kind == "hidden":  # cost grows ~ hidden^2: a log axis shows the slope
            axis.set_yscale("log")
        else:
            axis.set_ylim(bottom=0)
        axis.set_xlabel("batch size" if kind == "batch" else "hidden size")
        axis.set_ylabel("training images / s (median)")
        fixed = f"hidden {first['hidden_size']}" if kind == "batch" else f"batch {first['batch_size']}"
        axis.set_title(f"{first['preset']}: images/s against {kind} size ({fixed}), {first['device']}")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(figure, path, dpi=110)
    plt.close(figure)
