"""`python -m parity`: run the parity checks and print one table (preset x check x device); exit 1 on a failure."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.allocator import tune_glibc_malloc
from common.cli import DEVICES, OneLineParser, cli_errors, preset_list
from common.console import print_table, progress
from common.data import load_dataset
from common.errors import ConfigError
from common.outputs import claim_output_file, claim_output_folder, entry_point, write_atomically
from common.presets import PRESETS
from parity.checks import CHECKS, SUITE_CHECKS, Row, format_figures
from parity.suite import (
    Curves,
    SuiteOptions,
    as_tf32_rows,
    cross_device_rows,
    every_device_sides,
    gpu_available,
    not_run_rows,
    run_preset,
    set_tf32,
)

PROG = "python -m parity"


def parse_checks(text: str) -> tuple[str, ...]:
    """`logits,gradients` or `1,3` (numbers are aliases) -> the check names, in the suite's order."""
    by_number = {str(number): name for name, number in CHECKS.items()}
    names = {by_number.get(item.strip(), item.strip()) for item in text.split(",")}
    unknown = sorted(names - set(CHECKS))
    if unknown:
        raise ValueError(unknown[0])
    return tuple(name for name in CHECKS if name in names)


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description=__doc__)
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated presets")
    parser.add_argument(
        "--checks",
        default=",".join(SUITE_CHECKS),
        help="comma-separated names or numbers: "
        + ", ".join(f"{n} {name}" for name, n in CHECKS.items())
        + "; accuracy, full trainings over seeds, runs only when named (hours on a CPU)",
    )
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="auto: the CPU, and the GPU too when there is one (then also the cross-device row); "
        "gpu (or cuda): the GPU only, its rows 'not run' where there is none",
    )
    parser.add_argument("--steps", type=int, default=100, help="trajectory: training steps at lr 1e-4")
    parser.add_argument(
        "--recipe-steps", type=int, default=150, help="trajectory and cross-eval: training steps at the recipe's lr"
    )
    parser.add_argument("--images", type=int, default=64, help="real test images for logits, hidden-states, gradients")
    parser.add_argument(
        "--tf32",
        action="store_true",
        help="on a GPU, also run the float32 checks with TF32 on (the frameworks' default) and show "
        "those rows beside the full-precision ones, not judged",
    )
    parser.add_argument(
        "--backward",
        choices=("auto", "autodiff", "manual"),
        default="auto",
        help="the Flax side's gradient through the recurrence: autodiff (jax.grad through the time scan), "
        "manual (jax_impl/backward.py), auto: as the JAX trainer chooses (manual on a CPU, autodiff on a GPU)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every row as JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.add_argument("--plot", metavar="DIR", help="write PNGs: the recipe-lr loss curves, logit differences")
    parser.add_argument("--data-dir", help="IDX folder (when not given: the bundled MNIST)")
    parser.add_argument("--seeds", default="5", help="accuracy: a seed count N (0..N-1), a list 3,7 or a range 5-9")
    parser.add_argument("--work", default="runs/check6", help="accuracy: folder for its trainings (reused on a rerun)")
    return parser


def devices_to_run(requested: str) -> list[str]:
    """`--device` as the devices whose rows run: auto is the CPU plus the GPU when both frameworks see one."""
    if requested == "auto":
        return ["cpu", "gpu"] if gpu_available()[0] else ["cpu"]
    return ["gpu"] if requested in ("gpu", "cuda") else ["cpu"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.preset_list = preset_list(parser, args.presets)
    try:
        args.check_list = parse_checks(args.checks)
    except ValueError as unknown:
        parser.error(
            f"--checks: unknown check {unknown}; expected names or numbers from "
            + ", ".join(f"{n} {name}" for name, n in CHECKS.items())
        )
    for flag in ("steps", "recipe_steps", "images"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    try:
        args.json = args.json and claim_output_file(args.json, "--json", overwrite=args.overwrite)
        args.plot = args.plot and claim_output_folder(args.plot, "--plot")
        if "accuracy" in args.check_list:
            claim_output_folder(args.work, "--work")
    except ConfigError as error:
        parser.error(str(error))
    return args


def report(rows: list[Row]) -> None:
    header = ("preset", "check", "case", "device", "dtype", "compared", "figures", "tolerance", "result")
    print_table(
        header,
        [
            (
                r.preset,
                r.check,
                r.case,
                r.device,
                r.dtype,
                r.compared,
                format_figures(r),
                r.tolerance,
                {True: "pass", False: "FAIL", None: "not run"}[r.passed],
            )
            for r in rows
        ],
    )
    for row in rows:
        if row.detail:
            print(f"  {row.preset} / {row.check} ({row.case}) / {row.device} / {row.dtype}: {row.detail}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tune_glibc_malloc()  # common/allocator.py: torch's CPU RNNs allocate and free megabytes every step
    check6 = "accuracy" in args.check_list
    args.check_list = tuple(c for c in args.check_list if c != "accuracy")
    options = SuiteOptions(
        checks=args.check_list,
        images=args.images,
        small_lr_steps=args.steps,
        recipe_lr_steps=args.recipe_steps,
        backward=args.backward,
    )
    devices = devices_to_run(args.device)
    curves: list[Curves] = []
    logit_gaps: dict[str, np.ndarray] = {}
    rows: list[Row] = []
    with cli_errors(PROG):
        dataset = load_dataset("mnist", args.data_dir)
        for device in devices:
            if device == "gpu":
                ok, reason = gpu_available()
                if not ok:
                    for preset in args.presets.split(","):
                        rows += not_run_rows(preset, device, reason, options)
                    continue
                set_tf32(False)
            for preset in progress(args.presets.split(","), f"parity ({device})"):
                rows += run_preset(
                    preset, dataset, device, options, on_curves=curves.append, on_logit_gaps=logit_gaps.__setitem__
                )
                if device == "gpu" and args.tf32:
                    set_tf32(True)
                    rows += as_tf32_rows(
                        run_preset(preset, dataset, device, dataclasses.replace(options, dtypes=("float32",)))
                    )
                    set_tf32(False)
        if devices == ["cpu", "gpu"] and gpu_available()[0] and "logits" in options.checks:
            sides = every_device_sides()
            for preset in args.presets.split(","):
                rows += cross_device_rows(preset, dataset, options, sides)
    report(rows)
    written: list[Path] = []
    with cli_errors(PROG):
        if args.json:
            write_atomically(args.json, (json.dumps([row.as_dict() for row in rows], indent=1) + "\n").encode())
            written.append(args.json)
        if args.plot:
            from parity.plots import plot_logit_gaps, plot_trajectories

            plotted = [
                plot_trajectories(curves, Path(args.plot) / "trajectories.png"),
                plot_logit_gaps(logit_gaps, Path(args.plot) / "logit_differences.png", args.images),
            ]
            written += [path for path in plotted if path is not None]
    failed = [row for row in rows if row.passed is False]
    if rows:
        print(
            f"parity: {sum(row.passed is True for row in rows)} passed, {len(failed)} failed, "
            f"{sum(row.passed is None for row in rows)} not run or not judged"
        )
    if written:
        print(f"wrote {', '.join(str(path) for path in written)}")
    check6_failed = False
    if check6:
        from parity import accuracy

        for device in devices:
            command = [
                "--presets",
                args.presets,
                "--seeds",
                args.seeds,
                "--work",
                str(Path(args.work) / device),
                "--device",
                device,
            ]
            if device == "gpu" and not gpu_available()[0]:
                print(f"accuracy on gpu: not run: {gpu_available()[1]}")
                continue
            check6_failed |= accuracy.main(command + (["--data-dir", args.data_dir] if args.data_dir else [])) != 0
    return 1 if failed or check6_failed else 0


if __name__ == "__main__":
    sys.exit(entry_point(main))
