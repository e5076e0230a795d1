"""Plots a person can read: a run evaluated once still gets a readable panel and a hint, every drawn element
has a legend entry, an exact agreement is no dip on a log axis, titles say what was measured."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common.runplot import runs_figure
from parity.plots import Curves, logit_gaps_figure, trajectories_figure
from tests.conftest import run_module

DIGITS = (np.zeros((2, 28, 28), np.uint8), np.array([1, 2]), np.array([7, 3]))


def records(steps: int, evaluations: list[int]) -> list[dict]:
    return [
        {
            "step": step,
            "epoch": 1,
            "loss": 2.0 / step,
            "images_per_s": 1000.0,
            "accuracy": 0.9 + step / 1e4 if step in evaluations else None,
        }
        for step in range(10, steps + 1, 10)
    ]


def test_runs_evaluated_once_get_the_smoothed_loss_and_their_final_accuracy_and_a_hint():
    figure, notes = runs_figure([("torch lstm", records(100, [100])), ("jax lstm", records(100, [100]))], DIGITS)
    accuracy_axis = figure.axes[1]
    assert "Smoothed training loss" in accuracy_axis.get_title()
    assert [line.get_label() for line in accuracy_axis.get_lines()] == [
        "torch lstm: test accuracy 91.00% at step 100",
        "jax lstm: test accuracy 91.00% at step 100",
    ]
    assert any("--eval-every-steps" in note for note in notes)


def test_a_run_evaluated_once_before_its_end_says_the_step_and_one_never_evaluated_keeps_its_label():
    figure, _ = runs_figure([("torch lstm", records(100, [20])), ("jax lstm", records(100, []))], DIGITS)
    labels = [line.get_label() for line in figure.axes[1].get_lines()]
    assert labels == ["torch lstm: test accuracy 90.20% at step 20", "jax lstm"]


def test_runs_with_an_accuracy_curve_get_it_and_no_hint():
    figure, notes = runs_figure([("torch lstm", records(100, [50, 100]))], DIGITS)
    assert figure.axes[1].get_title() == "Test accuracy" and not notes
    assert list(figure.axes[1].get_lines()[0].get_ydata()) == [0.905, 0.91]


def test_the_trajectory_plot_names_the_threshold_and_draws_no_dip_where_the_runs_agree_exactly():
    losses = np.array([2.0, 1.5, 1.2, 1.0])
    curves = [Curves("lstm", "cpu", losses, np.array([2.0, 1.5, 1.2001, 1.01]), losses + np.array([0, 1e-7, 0, 2e-3]))]
    figure = trajectories_figure(curves)
    bottom = figure.axes[1]
    labels = [line.get_label() for line in bottom.get_lines()]
    assert "0.001: the runs have parted" in labels
    framework_gap = bottom.get_lines()[0].get_ydata()
    assert np.isnan(framework_gap[:2]).all() and np.nanmin(framework_gap) > 1e-6  # exact steps: no point


def test_the_logit_difference_plot_says_how_many_images():
    figure = logit_gaps_figure({"lstm": np.array([1e-7, -2e-7])}, images=16)
    assert figure.axes[0].get_title() == "Logit differences on 16 real MNIST test images"


@pytest.mark.trains
def test_the_plot_command_hints_at_eval_every_steps_for_runs_evaluated_once(tmp_path, capsys):
    flags = ["--max-steps", "30", "--log-every", "10", "--out", str(tmp_path / "run")]
    result = run_module("torch_impl.train", flags, capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    shown = run_module("jax_impl.plot", [str(tmp_path / "run"), "--out", str(tmp_path / "p.png")], capsys)
    assert shown.returncode == 0 and "note: each run was evaluated once" in shown.stdout
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["test_accuracy"] > 0
