"""The benchmark and the plot command run on tiny settings and report sane numbers / pictures."""

from __future__ import annotations

import json

from tests.conftest import assert_one_line_error, run_cli


def test_bench_reports_positive_throughput_for_all_three_loops(tmp_path):
    result = run_cli("parity.bench", "--presets", "lstm", "--steps", "5", "--reps", "2", "--json", str(tmp_path / "b.json"))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [row for row in json.loads((tmp_path / "b.json").read_text()) if row["runner"] != "(process)"]
    assert {row["runner"] for row in rows} == {"tutorial loop", "torch trainer", "jax trainer"}
    for row in rows:
        assert 0 < row["min"] <= row["images_per_s"] <= row["max"] and row["vs_tutorial"] > 0
    assert "tutorial loop" in result.stdout and "x tutorial" in result.stdout


def test_plot_overlays_runs_of_both_frameworks(tmp_path):
    for framework in ("torch", "jax"):
        result = run_cli(f"{framework}_impl.train", "--max-steps", "40", "--log-every", "10", "--out",
                         str(tmp_path / framework))
        assert result.returncode == 0, result.stderr[-2000:]
    result = run_cli("parity.plot", str(tmp_path / "torch"), str(tmp_path / "jax"), "--out", str(tmp_path / "p.png"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "p.png").stat().st_size > 20000


def test_plot_refuses_a_folder_that_is_not_a_run(tmp_path):
    assert_one_line_error(run_cli("parity.plot", str(tmp_path), "--out", str(tmp_path / "p.png")), 1,
                          "not a run folder (no metrics.jsonl)")
