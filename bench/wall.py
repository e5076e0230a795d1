"""`python -m bench.wall`: what a user waits for, the whole-process wall time of a trainer's command.

    python -m bench.wall --presets lstm,bilstm --rounds 3            # one epoch of each, both trainers
    python -m bench.wall --presets lstm --rounds 1 --max-steps 50    # a smoke run

For each round, preset and framework: `python -m {torch,jax}_impl.train --preset P --epochs 1` run as a
user runs it, twice in a row on one new, empty JAX compilation cache folder (the first run compiles and
keeps its programs: "cold"; the second finds them: "warm"; torch keeps nothing, so its two runs are the
same command twice). Rounds interleave the frameworks and presets; the table gives each one's median over
rounds, with the trainer's own `compile_seconds` and training images/s from `summary.json`. The wall time
includes starting Python, importing the framework, loading MNIST, compiling, training and the final
evaluation of the 10,000 test images.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from common.cli import OneLineParser, cli_errors, positive_int, preset_list
from common.errors import SeqMnistError
from common.outputs import claim_output_file, entry_point, write_atomically

PROG = "python -m bench.wall"

FRAMEWORKS = ("torch", "jax")
RUNS = ("cold", "warm")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="lstm,bilstm", help="comma-separated presets")
    parser.add_argument("--rounds", type=positive_int, default=3, help="interleaved rounds; the table gives medians")
    parser.add_argument("--max-steps", type=positive_int, help="stop each run after N steps (smoke runs)")
    parser.add_argument("--data-dir", help="IDX folder (when not given: the bundled MNIST)")
    parser.add_argument("--json", metavar="FILE", help="also write every run's figures as JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    return parser


def one_run(framework: str, preset: str, out: Path, cache: Path, args: argparse.Namespace) -> dict:
    """One trainer command in a fresh process: its wall time and its summary's figures."""
    command = [sys.executable, "-m", f"{framework}_impl.train", "--preset", preset, "--epochs", "1"]
    command += ["--out", str(out), "--overwrite"]
    command += ["--max-steps", str(args.max_steps)] if args.max_steps else []
    command += ["--data-dir", args.data_dir] if args.data_dir else []
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache)}
    env.pop("SEQMNIST_JAX_CACHE", None)
    began = time.perf_counter()
    finished = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    if finished.returncode != 0:
        tail = (finished.stderr.strip().splitlines() or ["no output"])[-1]
        raise SeqMnistError(f"{' '.join(command[2:])} exited {finished.returncode}: {tail}")
    summary = json.loads((out / "summary.json").read_text())
    return {
        "wall_seconds": wall,
        "compile_seconds": summary["compile_seconds"],
        "train_images_per_s": summary["train_images_per_s"],
        "test_accuracy": summary["test_accuracy"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    presets = preset_list(parser, args.presets)
    with cli_errors(PROG):
        json_path = args.json and claim_output_file(args.json, "--json", overwrite=args.overwrite)
        return measure(args, presets, json_path)


def measure(args: argparse.Namespace, presets: list[str], json_path: Path | None) -> int:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-wall-") as folder:
        for round_ in range(args.rounds):
            for preset in presets:
                for framework in FRAMEWORKS if round_ % 2 == 0 else FRAMEWORKS[::-1]:
                    cache = Path(folder) / f"cache-{round_}-{preset}-{framework}"  # new and empty: cold
                    for run in RUNS:
                        figures = one_run(framework, preset, Path(folder) / "run", cache, args)
                        rows.append({"round": round_, "preset": preset, "framework": framework, "run": run, **figures})
                        print(
                            f"round {round_} {preset} {framework} {run}: {figures['wall_seconds']:.2f} s "
                            f"(compile {figures['compile_seconds']:.2f} s)",
                            file=sys.stderr,
                        )
    print(
        f"{'preset':8}{'framework':11}{'run':6}{'wall s (median)':>17}{'min-max':>14}"
        f"{'compile s':>11}{'train img/s':>13}"
    )
    for preset in presets:
        for framework in FRAMEWORKS:
            for run in RUNS:
                mine = [
                    row for row in rows if (row["preset"], row["framework"], row["run"]) == (preset, framework, run)
                ]
                walls = [row["wall_seconds"] for row in mine]
                compile_ = statistics.median(row["compile_seconds"] for row in mine)
                speed = statistics.median(row["train_images_per_s"] for row in mine)
                print(
                    f"{preset:8}{framework:11}{run:6}{statistics.median(walls):17.2f}"
                    f"{f'{min(walls):.2f}-{max(walls):.2f}':>14}{compile_:11.2f}{speed:13.0f}"
                )
    if json_path:
        payload = {"rounds": args.rounds, "max_steps": args.max_steps, "runs": rows}
        write_atomically(json_path, (json.dumps(payload, indent=1) + "\n").encode())
        print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(entry_point(main))
