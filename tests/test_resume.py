"""Checkpoints and resume: a SIGKILLed run continued with --resume ends byte-identical to an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from common.checkpoint import checkpoint_paths, load_checkpoint
from tests.conftest import ROOT, assert_one_line_error, run_cli

pytestmark = pytest.mark.trains  # trains models: left out of the inner loop (-m "not trains")

COMMAND = ["--preset", "lstm", "--max-steps", "120", "--checkpoint-every", "20", "--log-every", "10"]


def start(framework: str, out) -> subprocess.Popen:
    env = {**os.environ, "CI": "true", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", f"{framework}_impl.train", *COMMAND, "--out", str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_checkpoint(out, process, minimum_step: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        paths = checkpoint_paths(out)
        if paths and int(paths[-1].stem.split("-")[1]) >= minimum_step:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_a_sigkilled_run_resumes_to_the_same_bytes(tmp_path, framework):
    result = run_cli(f"{framework}_impl.train", *COMMAND, "--out", str(tmp_path / "whole"))
    assert result.returncode == 0, result.stderr[-2000:]

    process = start(framework, tmp_path / "killed")
    wait_for_checkpoint(tmp_path / "killed", process, minimum_step=40)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    killed_at = load_checkpoint(checkpoint_paths(tmp_path / "killed")[-1]).step
    assert 40 <= killed_at < 120 and len(checkpoint_paths(tmp_path / "killed")) <= 2

    result = run_cli(f"{framework}_impl.train", *COMMAND, "--out", str(tmp_path / "killed"), "--resume")
    assert result.returncode == 0, result.stderr[-2000:]
    whole, resumed = (tmp_path / name / "model.safetensors" for name in ("whole", "killed"))
    assert resumed.read_bytes() == whole.read_bytes()
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 120  # the killed run's lines past its checkpoint are gone


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_ctrl_c_stops_cleanly_with_a_checkpoint_and_says_how_to_resume(tmp_path, framework):
    process = start(framework, tmp_path / "run")
    wait_for_checkpoint(tmp_path / "run", process, minimum_step=20)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert "after writing a checkpoint" in last and "--resume" in last and "Traceback" not in stderr
    stopped_at = load_checkpoint(checkpoint_paths(tmp_path / "run")[-1]).step
    assert f"stopped at step {stopped_at}" in last


def test_resume_refuses_other_flags_and_a_folder_without_checkpoints(tmp_path):
    out = tmp_path / "run"
    result = run_cli("torch_impl.train", *COMMAND, "--max-steps", "20", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    result = run_cli("torch_impl.train", *COMMAND, "--hidden-size", "32", "--out", str(out), "--resume")
    assert_one_line_error(result, 1, "--resume", "hidden_size=64", "32")
    result = run_cli("torch_impl.train", "--out", str(tmp_path / "empty"), "--resume")
    assert_one_line_error(result, 1, "no run to resume there")


def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        "torch_impl.train",
        "--preset",
        "rnn",
        "--learning-rate",
        "1e30",
        "--checkpoint-every",
        "1",
        "--log-every",
        "1",
        "--max-steps",
        "50",
        "--out",
        str(out),
    )
    assert_one_line_error(result, 1, "step", "try a lower --learning-rate")
    assert "loss became" in result.stderr or "weights became NaN or inf" in result.stderr
    assert not (out / "model.safetensors").exists()
    for path in checkpoint_paths(out):
        checkpoint = load_checkpoint(path)  # every kept checkpoint is finite (the loader checks)
        assert all(np.isfinite(array).all() for array in checkpoint.weights.values())
