"""Run files say what they mean: every summary field documented, one permission for every file, each
framework's device named, and the images/s of a chunk that compiled not inflated by that compilation."""

from __future__ import annotations

import json
import os
import re
import stat

import jax
import pytest

from common.commands import Summary
from common.data import load_dataset
from common.presets import get_preset
from common.sampler import BatchSampler
from common.weights import initial_weights
from jax_impl.train import JaxTrainer
from tests.conftest import ROOT, run_module, small_mnist_dir

pytestmark = pytest.mark.trains


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_the_run_files_share_one_permission_and_summary_json_holds_the_documented_fields(framework, tmp_path, capsys):
    """The command's `main` in this process, which writes its files under the process's umask."""
    result = run_module(
        f"{framework}_impl.train",
        [
            "--max-steps",
            "12",
            "--log-every",
            "5",
            "--checkpoint-every",
            "6",
            "--data-dir",
            str(small_mnist_dir()),
            "--out",
            str(tmp_path / "run"),
        ],
        capsys,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    files = [path for path in (tmp_path / "run").rglob("*") if path.is_file()]
    umask = os.umask(0o022)
    os.umask(umask)
    assert {stat.S_IMODE(path.stat().st_mode) for path in files} == {0o666 & ~umask}, files
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary) == set(Summary.__annotations__) | {
        "steps",
        "epochs_completed",
        "train_images_per_s",
        "train_seconds",
        "train_loss_last_epoch",
        "train_loss_last_log",
    }
    documented = set(re.findall(r"`(\w+)`", (ROOT / "docs" / "run-files.md").read_text()))
    assert set(summary) <= documented, set(summary) - documented
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert summary["train_loss_last_log"] == pytest.approx(records[-1]["loss"])  # the last point: steps 11-12
    threads = os.environ.get("OMP_NUM_THREADS", os.cpu_count())  # a pytest-xdist worker's share (tests/conftest.py)
    assert summary["device"] in (f"cpu ({threads} threads)", f"cpu (XLA, {os.cpu_count()} cores)") or (
        "cuda" in summary["device"]
    )
    assert "(cpu)" not in summary["device"]


def test_compiling_a_new_chunk_shape_waits_for_the_steps_already_dispatched(monkeypatch):
    """Else the compile's wall time overlaps those steps and is subtracted from training time twice over."""
    config = get_preset("lstm")
    trainer = JaxTrainer(config, initial_weights(config), load_dataset("mnist"), "cpu")
    events: list[str] = []
    waited, compiled = jax.block_until_ready, jax.stages.Lowered.compile
    monkeypatch.setattr(jax, "block_until_ready", lambda tree: events.append("wait") or waited(tree))
    monkeypatch.setattr(
        jax.stages.Lowered, "compile", lambda self, *a, **k: events.append("compile") or compiled(self, *a, **k)
    )
    batches = BatchSampler(60000, 64, 0).batches(0)
    trainer.train_steps(batches[:3])  # three single steps: one shape, compiled once
    trainer.train_steps(batches[:2] + [batches[0][:32]])  # then a short batch: a second shape
    assert events == ["wait", "compile", "wait", "compile"]
