"""`python -m parity`: run the parity checks and print one table (preset x check x device); exit 1 on a failure."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from common.cli import OneLineParser, fail
from common.data import load_dataset
from common.errors import SeqMnistError
from common.presets import PRESETS
from common.console import progress
from parity.suite import ALL_CHECKS, SuiteOptions, full_precision_on_gpu, gpu_available, not_run_rows, run_preset


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m parity", description=__doc__)
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated (default: all)")
    parser.add_argument("--checks", default=",".join(map(str, ALL_CHECKS)),
                        help="comma-separated from 1 logits, 2 hidden states, 3 gradients, 4 trajectory, 5 cross-eval "
                             "(default); 6 accuracy over seeds from full trainings only when named (hours on a CPU)")
    parser.add_argument("--device", choices=("cpu", "gpu", "all"), default="cpu")
    parser.add_argument("--steps", type=int, default=100, help="check 4a: training steps at lr 1e-4 (>= 100 to pass as specified)")
    parser.add_argument("--recipe-steps", type=int, default=150, help="check 4b/5: training steps at the recipe's lr")
    parser.add_argument("--images", type=int, default=64, help="real test images for checks 1-3")
    parser.add_argument("--json", metavar="FILE", help="also write every row as JSON")
    parser.add_argument("--plot", metavar="DIR", help="write PNGs: check 4b loss curves, logit differences")
    parser.add_argument("--data-dir", help="IDX folder (default: the bundled MNIST)")
    parser.add_argument("--seeds", default="5", help="check 6: a seed count N (0..N-1), a list 3,7 or a range 5-9")
    parser.add_argument("--work", default="runs/check6", help="check 6: folder for its trainings (reused on a rerun)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.presets.split(",") if name not in PRESETS]
    if unknown:
        parser.error(f"--presets: unknown preset {unknown[0]!r}; expected some of {', '.join(PRESETS)}")
    try:
        args.check_list = tuple(sorted({int(c) for c in args.checks.split(",")}))
    except ValueError:
        parser.error(f"--checks must be numbers from 1 to 6, got {args.checks!r}")
    if not set(args.check_list) <= {*ALL_CHECKS, 6}:
        parser.error(f"--checks must be numbers from 1 to 6, got {args.checks!r}")
    for flag in ("steps", "recipe_steps", "images"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    return args


def format_number(value) -> str:
    return "-" if value is None else f"{value:.2e}"


def print_table(rows) -> None:
    header = ("preset", "check", "device", "dtype", "compared", "max abs", "scaled", "tolerance", "result")
    lines = [(r.preset, r.check, r.device, r.dtype, r.compared, format_number(r.max_abs), format_number(r.scaled),
              r.tolerance, {True: "pass", False: "FAIL", None: "not run"}[r.passed]) for r in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    for line in [header, *lines]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())
    details = [(r, r.detail) for r in rows if r.detail]
    for row, detail in details:
        print(f"  {row.preset} / {row.check} / {row.device} / {row.dtype}: {detail}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check6 = 6 in args.check_list
    args.check_list = tuple(c for c in args.check_list if c != 6)
    options = SuiteOptions(checks=args.check_list, images=args.images, small_lr_steps=args.steps,
                           recipe_lr_steps=args.recipe_steps)
    devices = ["cpu", "gpu"] if args.device == "all" else [args.device]
    curves, logit_gaps, rows = [], {}, []
    try:
        dataset = load_dataset("mnist", args.data_dir)
        for device in devices:
            if device == "gpu":
                ok, reason = gpu_available()
                if not ok:
                    for preset in args.presets.split(","):
                        rows += not_run_rows(preset, device, reason, options)
                    continue
                full_precision_on_gpu()
            for preset in progress(args.presets.split(","), f"parity ({device})"):
                rows += run_preset(preset, dataset, device, options, on_curves=curves.append,
                                   on_logit_gaps=logit_gaps.__setitem__)
    except SeqMnistError as error:
        fail("python -m parity", str(error))
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps([row.as_dict() for row in rows], indent=1) + "\n")
    if args.plot:
        from parity.plots import plot_logit_gaps, plot_trajectories

        plot_trajectories(curves, Path(args.plot) / "trajectories.png")
        plot_logit_gaps(logit_gaps, Path(args.plot) / "logit_differences.png")
    failed = [row for row in rows if row.passed is False]
    if rows:
        print(f"parity: {sum(row.passed is True for row in rows)} passed, {len(failed)} failed, "
              f"{sum(row.passed is None for row in rows)} not run")
    check6_failed = False
    if check6:
        from parity import accuracy

        for device in devices:
            command = ["--presets", args.presets, "--seeds", args.seeds, "--work", str(Path(args.work) / device),
                       "--device", device]
            if device == "gpu" and not gpu_available()[0]:
                print(f"check 6 on gpu: not run: {gpu_available()[1]}")
                continue
            check6_failed |= accuracy.main(command + (["--data-dir", args.data_dir] if args.data_dir else [])) != 0
    return 1 if failed or check6_failed else 0


if __name__ == "__main__":
    sys.exit(main())
