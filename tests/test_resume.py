"""Checkpoints and resume: a SIGKILLed run continued with --resume ends byte-identical to an uninterrupted one."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from common.checkpoint import checkpoint_paths, load_checkpoint
from tests.conftest import ROOT, assert_one_line_error, run_cli, run_module, small_mnist_dir

pytestmark = pytest.mark.trains  # trains models: left out of the inner loop (-m "not trains and not tfds")

# 4,000 real training images (62 steps an epoch) and epochs enough for --max-steps: 120 steps cross an
# epoch end, so a resume may start past one as well as inside one
COMMAND = ["--preset", "lstm", "--max-steps", "120", "--checkpoint-every", "20", "--log-every", "10"]
COMMAND += ["--data-dir", str(small_mnist_dir()), "--epochs", "100"]


def start(framework: str, out, command: list[str] = COMMAND) -> subprocess.Popen:
    env = {**os.environ, "CI": "true", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", f"{framework}_impl.train", *command, "--out", str(out)],
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


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """framework -> the weights' bytes of COMMAND run without a stop: what every resumed run below must end
    with. Each framework's run is made once, on first use, for the two tests that compare with it."""
    root = tmp_path_factory.mktemp("uninterrupted")

    @functools.cache
    def weights(framework: str) -> bytes:
        result = run_cli(f"{framework}_impl.train", *COMMAND, "--out", str(root / framework))
        assert result.returncode == 0, result.stderr[-2000:]
        return (root / framework / "model.safetensors").read_bytes()

    return weights


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_a_sigkilled_run_resumes_to_the_same_bytes(tmp_path, framework, uninterrupted):
    process = start(framework, tmp_path / "killed")
    wait_for_checkpoint(tmp_path / "killed", process, minimum_step=40)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    killed_at = load_checkpoint(checkpoint_paths(tmp_path / "killed")[-1]).step
    assert 40 <= killed_at < 120 and len(checkpoint_paths(tmp_path / "killed")) <= 2

    result = run_cli(f"{framework}_impl.train", *COMMAND, "--out", str(tmp_path / "killed"), "--resume")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "killed" / "model.safetensors").read_bytes() == uninterrupted(framework)
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


def test_resume_refuses_other_flags_and_a_folder_without_checkpoints(tmp_path, capsys):
    """The command's `main` in this process: these refusals are its own lines, not the process's (the SIGKILL
    and Ctrl-C tests above run the command as a process)."""
    out = tmp_path / "run"
    result = run_module("torch_impl.train", [*COMMAND, "--max-steps", "20", "--out", str(out)], capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    result = run_module("torch_impl.train", [*COMMAND, "--hidden-size", "32", "--out", str(out), "--resume"], capsys)
    assert_one_line_error(result, 1, "--resume", "hidden_size=64", "32")
    result = run_module("torch_impl.train", ["--out", str(tmp_path / "empty"), "--resume"], capsys)
    assert_one_line_error(result, 1, "no run to resume there")


def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    result = run_module(
        "torch_impl.train",
        [
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
            "--data-dir",
            str(small_mnist_dir()),
            "--out",
            str(out),
        ],
        capsys,
    )
    assert_one_line_error(result, 1, "step", "try a lower --learning-rate")
    assert "loss became" in result.stderr or "weights became NaN or inf" in result.stderr
    assert not (out / "model.safetensors").exists()
    for path in checkpoint_paths(out):
        checkpoint = load_checkpoint(path)  # every kept checkpoint is finite (the loader checks)
        assert all(np.isfinite(array).all() for array in checkpoint.weights.values())


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_a_corrupt_newest_checkpoint_falls_back_to_the_one_before_and_still_ends_byte_identical(
    tmp_path, framework, uninterrupted
):
    partial = run_cli(f"{framework}_impl.train", *COMMAND[:3], "40", *COMMAND[4:], "--out", str(tmp_path / "run"))
    assert partial.returncode == 0, partial.stderr[-2000:]  # checkpoints at steps 20 and 40
    for name in ("model.safetensors", "summary.json"):  # as if killed after its step-40 checkpoint
        (tmp_path / "run" / name).unlink()
    newest = checkpoint_paths(tmp_path / "run")[-1]
    newest.write_bytes(newest.read_bytes()[:1000])  # a write cut short
    result = run_cli(f"{framework}_impl.train", *COMMAND, "--out", str(tmp_path / "run"), "--resume")
    assert result.returncode == 0, result.stderr[-2000:]
    notes = [line for line in result.stderr.splitlines() if line.startswith("--resume:")]
    assert len(notes) == 1 and "step-00000040.safetensors is unreadable" in notes[0]
    assert "resuming from step 20" in notes[0]
    # the resumed run wrote its own (the last two kept), each readable
    assert [load_checkpoint(path).step for path in checkpoint_paths(tmp_path / "run")] == [100, 120]
    assert (tmp_path / "run" / "checkpoints" / "step-00000040.safetensors.unreadable").exists()
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == uninterrupted(framework)


def test_no_readable_checkpoint_is_one_clear_line(tmp_path, capsys):
    result = run_module("torch_impl.train", [*COMMAND[:3], "20", *COMMAND[4:], "--out", str(tmp_path / "run")], capsys)
    assert result.returncode == 0
    (tmp_path / "run" / "model.safetensors").unlink()
    for path in checkpoint_paths(tmp_path / "run"):
        path.write_bytes(b"\0" * 64)
    refused = run_module("torch_impl.train", [*COMMAND, "--out", str(tmp_path / "run"), "--resume"], capsys)
    assert_one_line_error(refused, 1, "--resume: no readable checkpoint in", "step-00000020.safetensors is unreadable")


def test_a_failed_checkpoint_write_keeps_the_previous_files_and_names_the_file(tmp_path, monkeypatch, capsys):
    """A full disk at the second checkpoint: one line naming it, the first checkpoint intact, no temporary file."""
    import common.outputs
    from tests.conftest import assert_one_line, run_main
    from torch_impl.train import main as torch_train

    real_replace = os.replace

    def replace_unless_second_checkpoint(source, target):
        if str(target).endswith("step-00000040.safetensors"):
            raise OSError(28, "No space left on device")
        return real_replace(source, target)

    monkeypatch.setattr(common.outputs.os, "replace", replace_unless_second_checkpoint)
    code, _, err = run_main(torch_train, [*COMMAND, "--out", str(tmp_path / "run")], capsys)
    assert_one_line(
        code,
        err,
        1,
        "step-00000040.safetensors: could not write it (No space left on device)",
        "the previous file is intact",
    )
    assert [path.name for path in checkpoint_paths(tmp_path / "run")] == ["step-00000020.safetensors"]
    assert load_checkpoint(checkpoint_paths(tmp_path / "run")[0]).step == 20
    assert not list((tmp_path / "run").rglob("*.tmp"))


def test_a_second_run_on_the_same_out_is_refused_while_the_first_writes(tmp_path):
    first = start("torch", tmp_path / "run", [*COMMAND[:3], "5000", *COMMAND[4:]])  # still running when ...
    try:
        wait_for_checkpoint(tmp_path / "run", first, minimum_step=20)
        second = run_cli("torch_impl.train", *COMMAND, "--out", str(tmp_path / "run"), "--overwrite")
        assert_one_line_error(second, 1, "another run is writing there")
        assert first.poll() is None  # ... the second is refused: the first goes on, its files untouched
    finally:
        first.kill()
        first.wait()
