"""Check 6 and the run plotter, on tiny settings: their bookkeeping, figures and refusals."""

from __future__ import annotations

import json

import pytest

from tests.conftest import assert_one_line_error, run_cli, run_module

pytestmark = pytest.mark.trains  # trains models: left out of the inner loop (-m "not trains and not tfds")


def test_check6_trains_every_run_compares_means_and_reuses_finished_runs(tmp_path, idx_dir, capsys):
    """The bookkeeping of check 6 (runs, seeds, paired gaps, reuse, report-only), on the small IDX set: its
    test split is 100 images, so that each of the 6 trainings evaluates in moments (accuracy is not asserted).
    One float64 run kind (`jax64`) stands for both: `torch64` is the same command with the other framework."""
    work, report = tmp_path / "work", tmp_path / "c6.json"
    arguments = (
        "parity.accuracy",
        "--data-dir",
        str(idx_dir),
        "--presets",
        "lstm",
        "--seeds",
        "2",
        "--runs",
        "torch,jax,jax64",
        "--max-steps",
        "3",
        "--work",
        str(work),
        "--json",
        str(report),
        "--overwrite",  # the rerun below replaces the report
    )
    result = run_cli(*arguments)
    assert result.returncode in (0, 1), result.stderr[-2000:]
    payload = json.loads(report.read_text())
    assert [(r["seed"], sorted(r["accuracy"])) for r in payload["per_seed"]] == [
        (0, ["jax", "jax64", "torch"]),
        (1, ["jax", "jax64", "torch"]),
    ]
    (summary,) = payload["summary"]
    for seed_result, gap, jax_rounding in zip(
        payload["per_seed"], summary["gap_torch_jax_pp"], summary["gap_jax_rounding_pp"], strict=True
    ):
        assert gap == seed_result["accuracy"]["torch"] - seed_result["accuracy"]["jax"]
        assert jax_rounding == seed_result["accuracy"]["jax"] - seed_result["accuracy"]["jax64"]
    assert abs(summary["mean_gap_pp"] - (sum(summary["torch"]) - sum(summary["jax"])) / 2) < 1e-9
    assert summary["passed"] == (abs(summary["mean_gap_pp"]) <= 0.5)
    assert result.returncode == (0 if summary["passed"] else 1)
    # the float64 run started from the float32 weights, exactly
    from common.weights import load_weights

    start32, _ = load_weights(work / "lstm" / "seed-0" / "init-float32.safetensors")
    start64, _ = load_weights(work / "lstm" / "seed-0" / "init-float64.safetensors")
    assert all((start64[name] == start32[name].astype("float64")).all() for name in start32)
    logs = {path: path.stat().st_mtime_ns for path in work.rglob("*.log")}
    again = run_module("parity.accuracy", list(arguments[1:]), capsys)  # in this process: the runs' are the subject
    assert again.returncode == result.returncode
    assert {path: path.stat().st_mtime_ns for path in work.rglob("*.log")} == logs  # nothing trained again
    assert "lstm" in again.stdout and "per-seed torch32-torch64" in again.stdout
    # report-only: asks for more seeds and runs than exist, trains none of them, reports what is there
    partial, plot = tmp_path / "partial.json", tmp_path / "c6.png"
    only = run_module(
        "parity.accuracy",
        [
            "--presets",
            "lstm",
            "--seeds",
            "3",
            "--runs",
            "torch,jax,jax-native",
            "--max-steps",
            "3",
            "--work",
            str(work),
            "--json",
            str(partial),
            "--plot",
            str(plot),
            "--report-only",
            "--data-dir",
            str(idx_dir),
        ],
        capsys,
    )
    assert only.returncode == result.returncode, only.stderr[-2000:]
    assert {path: path.stat().st_mtime_ns for path in work.rglob("*.log")} == logs
    assert not (work / "lstm" / "seed-2").exists() and not list(work.rglob("jax-native*"))
    reported = json.loads(partial.read_text())
    assert [(r["seed"], sorted(r["accuracy"])) for r in reported["per_seed"]] == [
        (0, ["jax", "torch"]),
        (1, ["jax", "torch"]),
    ]
    assert reported["summary"][0]["mean_gap_pp"] == summary["mean_gap_pp"]
    assert (
        abs(reported["summary"][0]["mean_abs_gap_torch_jax_pp"] - sum(abs(g) for g in summary["gap_torch_jax_pp"]) / 2)
        < 1e-9
    )
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_check6_refuses_bad_seeds_and_runs(tmp_path, capsys):
    assert_one_line_error(run_module("parity.accuracy", ["--seeds", "0"], capsys), 2, "--seeds")
    assert_one_line_error(run_module("parity.accuracy", ["--runs", "torch,mxnet"], capsys), 2, "--runs")


def test_check6_seeds_are_a_count_a_list_or_a_range():
    from parity.accuracy import parse_seeds

    assert parse_seeds("5") == [0, 1, 2, 3, 4]  # a lone number is a count, as in "over 5 seeds"
    assert parse_seeds("3,7") == [3, 7] and parse_seeds("5-9") == [5, 6, 7, 8, 9] and parse_seeds("2-2") == [2]
    assert parse_seeds("0-1,4") == [0, 1, 4] and parse_seeds("1,1") == [1]
    for bad in ("0", "x", "3-", "9-5", "-2", "1,,2"):
        with pytest.raises(ValueError):
            parse_seeds(bad)


def test_check6_mean_gap_pairs_seeds_when_a_run_is_missing():
    from parity.accuracy import SeedResult, summarize

    results = [
        SeedResult("lstm", 0, {"torch": 96.0, "jax": 95.0}, {}),
        SeedResult("lstm", 1, {"torch": 97.0, "jax": 97.5}, {}),
        SeedResult("lstm", 2, {"jax": 90.0}, {}),
    ]  # torch for seed 2 not finished (yet)
    (row,) = summarize(results)
    assert row["gap_torch_jax_pp"] == [1.0, -0.5, None]
    assert row["mean_gap_pp"] == 0.25  # the difference of the unpaired means would be 96.5 - 94.17 = 2.33
    assert row["mean_abs_gap_torch_jax_pp"] == 0.75 and row["passed"] is True
    assert abs(row["mean_gap_standard_error_pp"] - 0.75) < 1e-12  # stdev(1.0, -0.5) / sqrt(2)


def test_check6_report_only_refuses_a_folder_without_runs(tmp_path, capsys):
    assert_one_line_error(
        run_module("parity.accuracy", ["--report-only", "--work", str(tmp_path / "none")], capsys),
        2,
        "--report-only",
        "is not a folder",
    )
    assert_one_line_error(
        run_module("parity.accuracy", ["--report-only", "--work", str(tmp_path)], capsys), 1, "no finished check-6 run"
    )


def test_plot_overlays_runs_of_both_frameworks(tmp_path, capsys):
    for framework in ("torch", "jax"):
        flags = ["--max-steps", "40", "--log-every", "10", "--out", str(tmp_path / framework)]
        result = run_module(f"{framework}_impl.train", flags, capsys)
        assert result.returncode == 0, result.stderr[-2000:]
    runs = [str(tmp_path / "torch"), str(tmp_path / "jax"), "--out", str(tmp_path / "p.png")]
    result = run_module("jax_impl.plot", runs, capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "p.png").stat().st_size > 20000


def test_plot_refuses_a_folder_that_is_not_a_run(tmp_path):
    assert_one_line_error(
        run_cli("torch_impl.plot", str(tmp_path), "--out", str(tmp_path / "p.png")),
        1,
        "not a run folder (no metrics.jsonl)",
    )


@pytest.mark.slow
def test_check6_full_training_of_lstm_over_five_seeds_agrees_within_half_a_point(tmp_path):
    """Check 6 for real on the cheapest preset (about 3 minutes on 2 cores): torch and Flax, 5 seeds."""
    report = tmp_path / "c6.json"
    result = run_cli(
        "parity.accuracy",
        "--presets",
        "lstm",
        "--seeds",
        "5",
        "--runs",
        "torch,jax",
        "--work",
        str(tmp_path / "work"),
        "--json",
        str(report),
        timeout=3600,
    )
    (summary,) = json.loads(report.read_text())["summary"]
    assert result.returncode == 0 and summary["passed"], (summary["torch"], summary["jax"], result.stderr[-2000:])
    assert min(summary["torch"] + summary["jax"]) > 94.0  # every seed learned the task


def test_parity_runs_check6_only_when_named_and_hands_it_its_flags(tmp_path, capsys):
    # named: the suite hands --seeds to check 6, whose one-line refusal shows it got there (`main` in this
    # process; the refusal below is the real command line's)
    flags = ["--presets", "lstm", "--checks", "6", "--seeds", "0", "--work", str(tmp_path)]
    assert_one_line_error(
        run_module("parity.__main__", flags, capsys),
        2,
        "python -m parity",
        "--seeds",
    )
    assert_one_line_error(run_cli("parity", "--checks", "8"), 2, "--checks: unknown check 8", "1 logits")
