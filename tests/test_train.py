"""Both trainers and evaluators end to end on real MNIST: smoke runs, output files, determinism, cross-evaluation."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

from common.presets import PRESETS
from common.weights import initial_weights, load_weights
from tests.conftest import (
    assert_one_line,
    assert_one_line_error,
    preset_tiers,
    run_cli,
    run_main,
    shrunk,
    small_mnist_dir,
)

pytestmark = pytest.mark.trains  # trains models: left out of the inner loop (-m "not trains and not tfds")

FRAMEWORKS = ("torch", "jax")
SMALL = str(small_mnist_dir())  # real MNIST cut to 4,000 training and 1,000 test images (tests/conftest.py)
SUMMARY_KEYS = {
    "test_accuracy",
    "test_loss",
    "train_images_per_s",
    "wall_seconds",
    "compile_seconds",
    "device",
    "versions",
    "steps",
    "config",
}


def train(framework, out, *args):
    result = run_cli(f"{framework}_impl.train", "--out", str(out), *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


# bilstm2x128 trains at hidden 32 in the default tier (its shape: two bidirectional layers; its recipe), at its
# own size under --run-slow; lstm2x128 (lstm2's shape) only there
NARROW = {"bilstm2x128": 32}


@pytest.mark.parametrize("preset, hidden", preset_tiers(NARROW, slow_only=("lstm2x128",)))
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_every_preset_trains_50_steps_and_writes_the_run_files(
    tmp_path, framework, preset, hidden, capsys, monkeypatch
):
    """The trainer's `main` in this process (the command-line process itself is the tests' below and
    test_outputs'): torch and JAX are imported once for the twelve runs, not twelve times. On real MNIST cut
    to 4,000 training and 1,000 test images (the run's figures need real digits, not 70,000 of them)."""
    if hidden is not None:
        shrunk(monkeypatch, preset, hidden)
    main = importlib.import_module(f"{framework}_impl.train").main
    flags = ["--out", str(tmp_path / "run"), "--preset", preset, "--max-steps", "50", "--data-dir", SMALL]
    code, out, err = run_main(main, flags, capsys)
    assert code == 0, err[-3000:]
    assert "test accuracy" in out.strip().splitlines()[-1]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS and summary["steps"] == 50
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and summary["test_loss"] > 0 and summary["train_images_per_s"] > 0
    assert summary["test_accuracy"] > 0.2  # 50 Adam steps already beat chance (0.1) on every recipe
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 50 and {"step", "epoch", "loss", "accuracy", "images_per_s", "elapsed"} <= set(
        records[-1]
    )
    if preset == "lstm2":  # its tutorial evaluates on the first 2000 test images every 50 steps: here all 1000
        assert records[-1]["eval_images"] == 1000 and records[-1]["accuracy"] is not None
    weights, config = load_weights(tmp_path / "run" / "model.safetensors")
    assert config == PRESETS[preset]
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == config.to_dict()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_same_command_twice_gives_identical_weights(tmp_path, framework):
    for name in ("a", "b"):
        train(framework, tmp_path / name, "--preset", "bilstm", "--max-steps", "60", "--data-dir", SMALL)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_both_frameworks_start_from_the_same_canonical_weights(tmp_path, capsys):
    """A single step at a tiny learning rate: both are still (nearly) at the shared initial weights."""
    weights = {}
    for framework in FRAMEWORKS:
        main = importlib.import_module(f"{framework}_impl.train").main
        flags = ["--preset", "lstm", "--max-steps", "1", "--learning-rate", "1e-9", "--data-dir", SMALL]
        code, _, err = run_main(main, [*flags, "--out", str(tmp_path / framework)], capsys)
        assert code == 0, err[-3000:]
        weights[framework] = load_weights(tmp_path / framework / "model.safetensors")[0]
    initial = initial_weights(PRESETS["lstm"])
    for name in initial:  # one step of lr 1e-9 moves each weight by at most ~1e-9
        np.testing.assert_allclose(weights["torch"][name], initial[name], rtol=0, atol=1e-8)
        np.testing.assert_allclose(weights["jax"][name], initial[name], rtol=0, atol=1e-8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short-trained model from each framework (50 steps of `lstm`, on the cut MNIST), by its command's `main`
    in this process (its output left to pytest; the command as a process: the same-command-twice test)."""
    root = tmp_path_factory.mktemp("trained")
    for framework in FRAMEWORKS:
        flags = ["--out", str(root / framework), "--preset", "lstm", "--max-steps", "50", "--data-dir", SMALL]
        assert importlib.import_module(f"{framework}_impl.train").main(flags) == 0
    return root


def evaluate(framework, capsys, *flags):
    """`python -m {framework}_impl.evaluate FLAGS` in this process (tests/test_bad_input.py and the trainers'
    own tests start the commands as processes): (exit code, stdout, stderr)."""
    return run_main(importlib.import_module(f"{framework}_impl.evaluate").main, list(flags), capsys)


@pytest.mark.parametrize("trained_by", FRAMEWORKS)
def test_cross_evaluation_agrees_with_the_trainers_own_figure(trained, trained_by, capsys):
    weights = trained / trained_by / "model.safetensors"
    summary = json.loads((trained / trained_by / "summary.json").read_text())
    results = {}
    for framework in FRAMEWORKS:
        code, out, err = evaluate(framework, capsys, "--weights", str(weights), "--json", "--data-dir", SMALL)
        assert code == 0, err[-2000:]
        results[framework] = json.loads(out)
    assert results["torch"]["n"] == results["jax"]["n"] == 1000
    assert results["torch"]["accuracy"] == results["jax"]["accuracy"] == summary["test_accuracy"]
    same = np.mean(np.array(results["torch"]["predictions"]) == np.array(results["jax"]["predictions"]))
    assert same == 1.0
    assert abs(results["torch"]["loss"] - results["jax"]["loss"]) < 1e-5


def test_an_out_folder_holding_a_run_is_refused_and_left_untouched(trained):
    before = (trained / "torch" / "model.safetensors").read_bytes()
    result = run_cli("torch_impl.train", "--out", str(trained / "torch"), "--max-steps", "1")
    assert_one_line_error(result, 2, "already holds a run", "--overwrite")
    assert (trained / "torch" / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_evaluate_refuses_weights_for_other_flags_and_bad_files(tmp_path, trained, framework, capsys):
    weights = trained / "torch" / "model.safetensors"
    result = evaluate(framework, capsys, "--weights", str(weights), "--preset", "bilstm")
    assert_one_line(result[0], result[2], 1, "holds bidirectional=False but the flags ask for True")
    (tmp_path / "junk.safetensors").write_text("hello")
    result = evaluate(framework, capsys, "--weights", str(tmp_path / "junk.safetensors"))
    assert_one_line(result[0], result[2], 1, "junk.safetensors: not a safetensors weights file")
    result = evaluate(framework, capsys, "--weights", str(tmp_path / "missing.safetensors"))
    assert_one_line(result[0], result[2], 1, "missing.safetensors: weights file not found")
