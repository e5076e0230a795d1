"""Plots of training runs: loss and accuracy against step for runs of either framework, overlaid, and a grid
of the test digits the first run's model gets wrong. Run as `python -m torch_impl.plot` or `jax_impl.plot`
(the framework that classifies the digits; either gives the same picture):

    python -m torch_impl.plot runs/torch-lstm-... runs/jax-lstm-... --out lstm.png
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from common.cli import OneLineParser, cli_errors, positive_int
from common.commands import PredictLogits
from common.data import images_to_row_sequences, load_dataset
from common.errors import SeqMnistError
from common.loop import MetricsRecord
from common.outputs import claim_output_file, save_figure
from common.weights import load_weights


def read_run(run: Path) -> tuple[str, list[MetricsRecord]]:
    """A label (`torch lstm`) and the metrics.jsonl records of a run folder."""
    metrics, summary = run / "metrics.jsonl", run / "summary.json"
    if not metrics.is_file():
        raise SeqMnistError(f"{run}: not a run folder (no metrics.jsonl)")
    try:
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as error:
        raise SeqMnistError(f"{metrics}: not JSON lines ({error.msg})") from None
    label = run.name
    if summary.is_file():
        info = json.loads(summary.read_text())
        label = f"{info.get('framework', '?')} {info.get('preset', '?')} ({info.get('test_accuracy', 0):.2%})"
    return label, records


def misclassified(run: Path, count: int, predict_logits: PredictLogits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to `count` test images the run's model gets wrong: images, true labels, predicted labels."""
    weights, config = load_weights(run / "model.safetensors")
    dataset = load_dataset(config.dataset)
    rows = images_to_row_sequences(dataset.test_images, config.dtype)
    predictions = predict_logits(config, weights, rows, "cpu").argmax(1)
    wrong = np.nonzero(predictions != dataset.test_labels)[0][:count]
    return dataset.test_images[wrong], dataset.test_labels[wrong], predictions[wrong]


SMOOTHING = 5  # log points in the moving average of the training loss, where it stands in for accuracy


def smoothed(values: list[float], width: int = SMOOTHING) -> np.ndarray:
    """A trailing moving average over up to `width` points (the first points over fewer)."""
    series = np.asarray(values, dtype=np.float64)
    sums = np.cumsum(np.insert(series, 0, 0.0))
    counts = np.minimum(np.arange(1, len(series) + 1), width)
    result: np.ndarray = (sums[1:] - sums[np.arange(1, len(series) + 1) - counts]) / counts
    return result


def runs_figure(
    series: list[tuple[str, list[MetricsRecord]]], digits: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[Figure, list[str]]:
    """The figure (loss, accuracy or a stand-in, misclassified digits) and notes for the person reading it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, truth, predicted = digits
    notes: list[str] = []
    figure = plt.figure(figsize=(13, 7.5))
    grid = figure.add_gridspec(2, 2, height_ratios=[1, 1.05])
    loss_axis, accuracy_axis = figure.add_subplot(grid[0, 0]), figure.add_subplot(grid[0, 1])
    curves = any(sum(r["accuracy"] is not None for r in records) > 1 for _, records in series)
    styles = ["-", "--", ":", "-."] * len(series)
    for (label, records), style in zip(series, styles, strict=False):
        steps = [r["step"] for r in records]
        loss_axis.plot(steps, [r["loss"] for r in records], style, label=label)
        evaluated = [(r["step"], accuracy) for r in records if (accuracy := r["accuracy"]) is not None]
        if curves:
            accuracy_axis.plot(*zip(*evaluated, strict=True), style, marker="o", markersize=3, label=label)
            continue
        # at most one evaluation per run: the smoothed loss carries the panel, and each run's legend entry
        # says its test accuracy and the step it was measured at, wherever that evaluation was
        # (a run whose log has no evaluation keeps its label, which carries its summary's final accuracy)
        said = f": test accuracy {evaluated[-1][1]:.2%} at step {evaluated[-1][0]}" if evaluated else ""
        accuracy_axis.plot(steps, smoothed([r["loss"] for r in records]), style, label=label + said)
    loss_axis.set(xlabel="step", ylabel="training loss (mean since last log point)", title="Training loss")
    if curves:
        accuracy_axis.set(xlabel="step", ylabel="test accuracy", title="Test accuracy")
    else:
        accuracy_axis.set(
            xlabel="step",
            ylabel=f"training loss, mean of {SMOOTHING} log points",
            title="Smoothed training loss (legend: each run's test accuracy)",
        )
        notes.append("each run was evaluated once, at its end: train with --eval-every-steps N for an accuracy curve")
    for axis in (loss_axis, accuracy_axis):
        axis.legend(fontsize=9)
        axis.grid(alpha=0.3)
    digit_grid = grid[1, :].subgridspec(2, max(1, (len(images) + 1) // 2))
    for index, image in enumerate(images):
        axis = figure.add_subplot(digit_grid[index % 2, index // 2])
        axis.imshow(image, cmap="gray_r")
        axis.set_title(f"true {truth[index]}, said {predicted[index]}", fontsize=8)
        axis.axis("off")
    figure.tight_layout(rect=(0, 0, 1, 0.98), h_pad=3.0)
    figure.text(0.5, 0.455, f"Test digits the first run's model gets wrong ({series[0][0]})", ha="center", fontsize=10)
    return figure, notes


def plot_runs(runs: list[Path], out: Path, predict_logits: PredictLogits, digits: int = 24) -> list[str]:
    """Write the runs' figure to `out`; return the notes for whoever asked for it."""
    import matplotlib.pyplot as plt

    series = [read_run(run) for run in runs]
    figure, notes = runs_figure(series, misclassified(runs[0], digits, predict_logits))
    save_figure(figure, out, dpi=100)
    plt.close(figure)
    return notes


def build_plot_parser(framework: str) -> OneLineParser:
    parser = OneLineParser(prog=f"python -m {framework}_impl.plot", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders written by torch_impl.train or jax_impl.train")
    parser.add_argument("--out", default="runs.png", help="the picture to write (.png, .pdf, .svg, ...)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument(
        "--digits", type=positive_int, default=24, help=f"misclassified digits to show ({framework} classifies them)"
    )
    return parser


def plot_main(argv: Sequence[str] | None, *, framework: str, predict_logits: PredictLogits) -> int:
    """`python -m <framework>_impl.plot RUN_DIR ...`: the runs' curves and misclassified digits in one PNG."""
    prog = f"python -m {framework}_impl.plot"
    args = build_plot_parser(framework).parse_args(argv)
    with cli_errors(prog):
        out = claim_output_file(args.out, "--out", overwrite=args.overwrite, plot=True)
        notes = plot_runs([Path(run) for run in args.runs], out, predict_logits, args.digits)
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {out}")
    return 0
