"""tools/gpu_report.sh, the budgeted GPU run, proved on the CPU at tiny sizes (DRY_RUN=1): its parts in
priority order under their caps, a part over its cap cut while the rest still run, everything packed into
report.tar.gz beside summary.txt (what the GPU machine hands back: at most 8 files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.trains


def gpu_report(out: Path, *args: str, timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "tools/gpu_report.sh", str(out), *args],
        cwd=ROOT,
        env={**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def unpack(out: Path) -> Path:
    """OUT holds the two files that come back, and nothing else; the report is unpacked beside them."""
    assert sorted(path.name for path in out.iterdir()) == ["report.tar.gz", "summary.txt"]
    with tarfile.open(out / "report.tar.gz") as archive:
        archive.extractall(out / "unpacked", filter="data")
    return out / "unpacked" / "report"


def summary_lines(out: Path) -> dict[str, str]:
    """summary.txt's part lines: name -> the rest ("4 s of a 20 s cap, exit 0")."""
    lines = (out / "summary.txt").read_text().splitlines()
    assert lines[0].startswith("gpu_report: budget") and lines[-1].startswith("total:"), lines
    return dict(line.split(": ", 1) for line in lines[1:-1])


STAND_IN = """#!/bin/sh
# python for the script's plumbing: parity hangs (its cap cuts it); a training writes the same files every time
case "$1 $2" in
  "-m parity") sleep 60 ;;
  "-m torch_impl.train" | "-m jax_impl.train")
    while [ $# -gt 1 ] && [ "$1" != --out ]; do shift; done
    mkdir -p "$2" && printf 'weights' > "$2/model.safetensors" && printf '{}' > "$2/summary.json" ;;
  *) exec PYTHON "$@" ;;
esac
"""


def test_a_part_over_its_cap_is_cut_and_the_rest_still_come_back_packed(tmp_path):
    """The script's own bookkeeping, with a stand-in for the commands it runs (the slow tier's full dry run,
    below, runs the real ones): the priority order, a cut part, the parts after it, the packing."""
    stand_in = tmp_path / "python"
    stand_in.write_text(STAND_IN.replace("PYTHON", sys.executable))
    stand_in.chmod(0o755)
    out = tmp_path / "report"
    result = gpu_report(
        out,
        "--budget",
        "120",
        "determinism",
        "parity",
        "versions",
        CAP_parity="2",
        CAP_determinism="80",
        CAP_versions="60",  # its 5% of 120 s is 6 s: importing torch and JAX from a cold venv took longer
        PYTHON=str(stand_in),
    )
    assert result.returncode == 1, result.stderr[-2000:]  # a part was cut: the run says so
    parts = summary_lines(out)
    assert list(parts) == ["versions", "parity", "determinism"]  # the priority order, not the order named
    assert parts["parity"].endswith("exit 124 (cut at its cap)") and "of a 2 s cap" in parts["parity"]
    assert parts["versions"].endswith("exit 0") and parts["determinism"].endswith("exit 0"), parts
    report = unpack(out)
    assert "torch" in (report / "versions.txt").read_text()
    assert (report / "determinism.txt").read_text().count("identical weights") == 2
    assert not list(report.rglob("*.safetensors"))  # weights stay out of what comes back
    assert (report / "epochs" / "torch-lstm" / "summary.json").is_file()  # the first run of the pair


def test_a_spent_budget_runs_nothing_more_and_still_packs(tmp_path):
    """An interpreter that hangs spends the budget in the first part; the next is not started."""
    hang = tmp_path / "hang"
    hang.write_text("#!/bin/sh\nsleep 60\n")
    hang.chmod(0o755)
    out = tmp_path / "report"
    result = gpu_report(out, "--budget", "5", "versions", "parity", CAP_versions="3", PYTHON=str(hang))
    parts = summary_lines(out)
    assert parts["versions"].startswith("3 s of a 3 s cap") and "(cut at its cap)" in parts["versions"], parts
    assert parts["parity"] == "not run, the budget is spent", parts
    assert result.returncode == 1
    assert (unpack(out) / "versions.txt").is_file()


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (("--budget", "soon"), {}, "--budget: expected whole seconds, at least 5, got soon"),
        (("warp",), {}, "unknown part warp"),
        (("--fast",), {}, "unknown flag --fast"),
        ((), {"CAP_bench": "1m"}, "CAP_bench: expected whole seconds, got 1m"),
    ],
)
def test_bad_arguments_are_refused_in_one_line_before_any_work(tmp_path, args, env, fragment):
    out = tmp_path / "report"
    result = gpu_report(out, *args, timeout=30, **env)
    assert result.returncode == 2 and fragment in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_an_out_folder_holding_a_report_is_refused(tmp_path):
    (tmp_path / "report.tar.gz").write_bytes(b"earlier")
    result = gpu_report(tmp_path, "versions", timeout=30)
    assert result.returncode == 2 and "already holds a report" in result.stderr
    assert (tmp_path / "report.tar.gz").read_bytes() == b"earlier"


@pytest.mark.slow
def test_the_gpu_report_runs_every_part_in_its_dry_run(tmp_path):
    """Every part at its dry-run size: parity, both trainers and the lever, the bench, determinism and
    check 6 with its seeds added one by one."""
    out = tmp_path / "report"
    result = gpu_report(out, "--budget", "600")
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:])
    parts = summary_lines(out)
    assert list(parts) == [
        "versions",
        "parity",
        "epochs",
        "bench",
        "determinism",
        "accuracy lstm seeds 0-0",
        "accuracy lstm seeds 0-1",
    ]
    assert all(line.endswith("exit 0") for line in parts.values()), parts
    report = unpack(out)
    assert all(row["passed"] for row in json.loads((report / "parity.json").read_text()))
    assert {row["runner"] for row in json.loads((report / "bench.json").read_text())} >= {
        "torch trainer",
        "jax trainer",
    }
    assert len(json.loads((report / "check6-lstm.json").read_text())["per_seed"]) == 2
    runs = {path.parent.name for path in (report / "epochs").glob("*/summary.json")}
    assert runs == {"torch-lstm", "jax-lstm", "jax-lever-lstm"}
    lever = json.loads((report / "epochs" / "jax-lever-lstm" / "summary.json").read_text())
    assert lever["versions"]["lever"] == "jax: unroll 2"
    assert (report / "determinism.txt").read_text().count("identical weights") == 2


def test_bench_epoch_runs_the_trainers_command_with_one_lever(tmp_path, capsys):
    from bench import epoch
    from tests.conftest import assert_one_line, run_main

    out = tmp_path / "run"
    code, stdout, _ = run_main(
        epoch.main, ["--lever", "jax: unroll 2", "--preset", "lstm", "--max-steps", "2", "--out", str(out)], capsys
    )
    assert code == 0 and str(out) in stdout.splitlines()[-1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["versions"]["lever"] == "jax: unroll 2" and summary["steps"] == 2
    assert_one_line(*run_main(epoch.main, ["--lever", "warp"], capsys)[::2], 2, "--lever: expected one of", "'warp'")
    assert_one_line(*run_main(epoch.main, ["--preset", "lstm"], capsys)[::2], 2, "expected --lever NAME")
    process_wide = ["--lever", "jax: synchronous dispatch", "--preset", "lstm"]
    assert_one_line(*run_main(epoch.main, process_wide, capsys)[::2], 2, "set once per process")
