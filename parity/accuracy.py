"""Check 6, `python -m parity.accuracy`: full trainings over seeds, both frameworks, test accuracy compared.

For each preset and seed, five full trainings, each by the trainers' own command line (a subprocess, just
as a user runs it):

- `torch`, `jax`: float32 from the same canonical initial weights and the same batches;
- `torch64`, `jax64`: each framework in float64 from those same weights (upcast exactly), so
  `torch - torch64` and `jax - jax64` are the gaps that each framework's float32 rounding alone makes in
  this recipe, the yardsticks for `torch - jax` (XLA's float32 tanh is less exact than torch's, so the
  two yardsticks need not agree);
- `torch-native`, `jax-native`: each framework's own initialisation for the seed (PyTorch's default
  distributions; Flax's lecun-normal / orthogonal), reported as mean +- spread next to the tutorial.

Passes when the mean float32 accuracies of torch and JAX over the seeds differ by at most 0.5 percentage
points (the mean of the per-seed gaps, over the seeds that have both runs). Every run's folder is kept
under `--work`; a run whose `summary.json` exists is not run again, so an interrupted check resumes where
it stopped (these take hours on a CPU).

    python -m parity.accuracy --presets lstm,bilstm --seeds 5 --work runs/check6 --json check6.json
    python -m parity.accuracy --work runs/check6 --report-only --plot check6.png   # the table from what is there

Runs are independent, so several invocations may share one `--work` folder (say, one per framework, each on
its own core); `--report-only` then prints the table from every finished run without training anything.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from common.cli import DEVICE_HELP, DEVICES, OneLineParser, cli_errors, preset_list
from common.errors import ConfigError, SeqMnistError
from common.outputs import claim_output_file, claim_output_folder, entry_point, write_atomically
from common.presets import PRESETS, get_preset
from common.weights import initial_weights, save_weights
from parity.accuracy_table import (
    MEAN_GAP_TOLERANCE_PP,
    RUNS,
    AccuracyRow,
    RunSummary,
    SeedResult,
    print_report,
    summarize,
)


def start_weight_paths(folder: Path) -> dict[str, Path]:
    """Where a seed's folder keeps its starting weights, by dtype."""
    return {"float32": folder / "init-float32.safetensors", "float64": folder / "init-float64.safetensors"}


def start_weights(preset: str, seed: int, folder: Path) -> dict[str, Path]:
    """The float32 canonical initial weights for the seed, and the same values upcast to float64."""
    config32 = dataclasses.replace(get_preset(preset), seed=seed)
    config64 = dataclasses.replace(config32, dtype="float64")
    weights = initial_weights(config32)
    paths = start_weight_paths(folder)
    save_weights(paths["float32"], weights, config32)
    save_weights(paths["float64"], {name: array.astype(np.float64) for name, array in weights.items()}, config64)
    return paths


def train_once(
    preset: str,
    seed: int,
    name: str,
    folder: Path,
    weights: dict[str, Path],
    data_dir: str | None,
    device: str,
    max_steps: int | None = None,
    report_only: bool = False,
) -> RunSummary | None:
    """One full training by the framework's CLI into `folder/name`; its summary (read back if already there).

    With `report_only`, a run not finished before returns None instead of being trained.
    """
    out = folder / name
    summary = out / "summary.json"
    framework, dtype, init = RUNS[name]
    command = [
        sys.executable,
        "-m",
        f"{framework}_impl.train",
        "--preset",
        preset,
        "--seed",
        str(seed),
        "--dtype",
        dtype,
        "--out",
        str(out),
        "--overwrite",
        "--device",
        device,
    ]
    command += ["--init", "native"] if init == "native" else ["--init-weights", str(weights[dtype])]
    if data_dir:
        command += ["--data-dir", data_dir]
    if max_steps:
        command += ["--max-steps", str(max_steps)]
    done = folder / f"{name}.command"  # written after a successful run: reuse its summary for the same command
    if summary.exists() and done.exists() and done.read_text() == " ".join(command[1:]):
        stored: RunSummary = json.loads(summary.read_text())
        return stored
    if report_only:
        return None
    log = folder / f"{name}.log"
    with log.open("w") as stream:
        finished = subprocess.run(
            command, stdout=stream, stderr=subprocess.STDOUT, env={**os.environ, "CI": "true"}, check=False
        )
    if finished.returncode != 0:
        last = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise SeqMnistError(f"{' '.join(command[2:4])} (seed {seed}, {name}) exited {finished.returncode}: {last[0]}")
    done.write_text(" ".join(command[1:]))
    finished_summary: RunSummary = json.loads(summary.read_text())
    return finished_summary


def run_check(
    presets: Sequence[str],
    seeds: Sequence[int],
    work: Path,
    runs: Sequence[str],
    data_dir: str | None = None,
    device: str = "cpu",
    max_steps: int | None = None,
    echo: Callable[[str], None] = print,
    report_only: bool = False,
) -> list[SeedResult]:
    """Every (preset, seed, run), trained or read back; with `report_only`, only the finished ones."""
    results = []
    for preset in presets:
        for seed in seeds:
            folder = work / preset / f"seed-{seed}"
            if report_only and not folder.is_dir():
                continue
            weights = start_weight_paths(folder) if report_only else start_weights(preset, seed, folder)
            result = SeedResult(preset, seed, {}, {})
            for name in runs:
                began = time.perf_counter()
                summary = train_once(preset, seed, name, folder, weights, data_dir, device, max_steps, report_only)
                if summary is None:
                    continue
                result.accuracy[name] = 100.0 * summary["test_accuracy"]
                result.wall_seconds[name] = summary["wall_seconds"]
                if not report_only:
                    echo(
                        f"accuracy: {preset} seed {seed} {name}: {result.accuracy[name]:.2f}% "
                        f"({time.perf_counter() - began:.0f} s)"
                    )
            if result.accuracy:
                results.append(result)
    return results


def accuracy_check(
    presets: Sequence[str],
    seeds: Sequence[int],
    work: Path,
    runs: Sequence[str] = tuple(RUNS),
    data_dir: str | None = None,
    device: str = "cpu",
    max_steps: int | None = None,
    report_only: bool = False,
    json_path: Path | None = None,
    plot_path: Path | None = None,
) -> list[AccuracyRow]:
    """Check 6 whole: every run trained (or read back), the table printed, the JSON and plot written."""
    results = run_check(presets, seeds, work, runs, data_dir, device, max_steps, report_only=report_only)
    if not results:
        raise SeqMnistError(f"{work}: no finished check-6 run for these presets, seeds and runs")
    rows = summarize(results)
    print_report(rows)
    if json_path:
        payload = {"per_seed": [dataclasses.asdict(r) for r in results], "summary": rows}
        write_atomically(json_path, (json.dumps(payload, indent=1) + "\n").encode())
        print(f"wrote {json_path}")
    if plot_path:
        from parity.plots import plot_check6

        plot_check6(rows, plot_path, MEAN_GAP_TOLERANCE_PP)
        print(f"wrote {plot_path}")
    return rows


def parse_seeds(text: str) -> list[int]:
    """`5` -> seeds 0..4 (a count); `3,7,11` -> those seeds; `5-9` -> seeds 5..9 (`2-2`: seed 2 alone)."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) == 1 and parts[0].isdigit():
        if int(parts[0]) == 0:
            raise ValueError(text)
        return list(range(int(parts[0])))
    seeds = []
    for part in parts:
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()) or (dash and int(last) < int(first)):
            raise ValueError(text)
        seeds += list(range(int(first), int(last) + 1)) if dash else [int(first)]
    return list(dict.fromkeys(seeds))


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m parity.accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated presets")
    parser.add_argument(
        "--seeds", default="5", help="a count N (seeds 0..N-1), a list 3,7 or a range 5-9 (2-2: seed 2 alone)"
    )
    parser.add_argument("--work", default="runs/check6", help="folder for every run (kept; reused on a rerun)")
    parser.add_argument("--runs", default=",".join(RUNS), help=f"which trainings, from {', '.join(RUNS)}")
    parser.add_argument("--device", choices=DEVICES, default="auto", help=f"the trainings' --device ({DEVICE_HELP})")
    parser.add_argument("--data-dir", help="IDX folder (when not given: the bundled MNIST)")
    parser.add_argument("--max-steps", type=int, help="stop each training after N steps (smoke runs, not check 6)")
    parser.add_argument("--json", metavar="FILE", help="also write the per-seed and summary figures as JSON")
    parser.add_argument("--plot", metavar="FILE", help="also write a PNG: every seed's accuracy, and the gaps")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json or --plot file")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: the table from the runs already finished under --work",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from jax_impl.cache import enable_compilation_cache

    enable_compilation_cache()  # before the first compile: JAX's programs kept on disk (jax_impl/cache.py)
    parser = build_parser()
    args = parser.parse_args(argv)
    presets = preset_list(parser, args.presets)
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError:
        parser.error(f"--seeds: expected a positive count, a list 3,7 or a range 5-9, got {args.seeds!r}")
    if args.max_steps is not None and args.max_steps <= 0:
        parser.error(f"--max-steps must be positive, got {args.max_steps}")
    runs = args.runs.split(",")
    if not runs or any(r not in RUNS for r in runs):
        parser.error(f"--runs: expected some of {', '.join(RUNS)}, got {args.runs!r}")
    work = Path(args.work)
    try:
        claim_output_folder(work, "--work")
        json_path = args.json and claim_output_file(args.json, "--json", overwrite=args.overwrite)
        plot_path = args.plot and claim_output_file(args.plot, "--plot", overwrite=args.overwrite, plot=True)
    except ConfigError as error:
        parser.error(str(error))
    if args.report_only and not work.is_dir():
        parser.error(f"--report-only: {work} is not a folder of check-6 runs (set --work)")
    with cli_errors("python -m parity.accuracy"):
        rows = accuracy_check(
            presets,
            seeds,
            work,
            runs,
            args.data_dir,
            args.device,
            args.max_steps,
            args.report_only,
            json_path,
            plot_path,
        )
    return 1 if any(row["passed"] is False for row in rows) else 0


if __name__ == "__main__":
    sys.exit(entry_point(main))
