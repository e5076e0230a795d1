"""`python -m parity`: run the parity checks and print one table (preset x check x device); exit 1 on a failure."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from common.cli import DEVICES, OneLineParser, cli_errors, preset_list
from common.console import print_table, progress
from common.data import load_dataset
from common.errors import ConfigError
from common.outputs import claim_output_file, claim_output_folder, entry_point, write_atomically
from common.presets import PRESETS
from parity.compare import Row, format_figures
from parity.devices import devices_to_run, gpu_available
from parity.suite import SuiteOptions, SuiteResult, run_suite
from parity.suite_checks import CHECKS, SUITE_CHECKS
from torch_impl.allocator import tune_glibc_malloc

PROG = "python -m parity"
PLOTS = ("trajectories.png", "logit_differences.png")  # what --plot DIR holds after a run


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
        help="auto: the CPU, and the GPU too when there is one; gpu (or cuda): the GPU only, its rows "
        "'not run' where there is none; with the GPU rows comes the cross-device row (the logits on "
        "torch and JAX, CPU and GPU, and NumPy)",
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
    parser.add_argument("--json", metavar="FILE", help="also write every row as JSON (rewritten after each preset)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file or --plot PNGs")
    parser.add_argument(
        "--plot", metavar="DIR", help=f"write {' and '.join(PLOTS)}: the recipe-lr loss curves, logit differences"
    )
    parser.add_argument("--data-dir", help="IDX folder (when not given: the bundled MNIST)")
    parser.add_argument("--seeds", default="5", help="accuracy: a seed count N (0..N-1), a list 3,7 or a range 5-9")
    parser.add_argument("--work", default="runs/check6", help="accuracy: folder for its trainings (reused on a rerun)")
    return parser


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
    if "accuracy" in args.check_list:
        from parity.accuracy import parse_seeds

        try:
            args.seed_list = parse_seeds(args.seeds)
        except ValueError:
            parser.error(f"--seeds: expected a positive count, a list 3,7 or a range 5-9, got {args.seeds!r}")
    try:
        args.json = args.json and claim_output_file(args.json, "--json", overwrite=args.overwrite)
        if args.plot:
            args.plot = claim_output_folder(args.plot, "--plot")
            for name in PLOTS:
                claim_output_file(args.plot / name, "--plot", overwrite=args.overwrite, plot=True)
        if "accuracy" in args.check_list:
            claim_output_folder(args.work, "--work")
    except ConfigError as error:
        parser.error(str(error))
    return args


def print_rows(rows: list[Row]) -> None:
    """The table, then each row's detail on a line of its own."""
    header = ("preset", "check", "case", "device", "dtype", "compared", "figures", "tolerance", "result")
    words = {True: "pass", False: "FAIL", None: "not run"}
    print_table(
        header,
        [
            (r.preset, r.check, r.case, r.device, r.dtype, r.compared, format_figures(r), r.tolerance, words[r.passed])
            for r in rows
        ],
    )
    for row in rows:
        if row.detail:
            print(f"  {row.preset} / {row.check} ({row.case}) / {row.device} / {row.dtype}: {row.detail}")
    failed = sum(row.passed is False for row in rows)
    if rows:
        print(
            f"parity: {sum(row.passed is True for row in rows)} passed, {failed} failed, "
            f"{sum(row.passed is None for row in rows)} not run or not judged"
        )


def write_rows(json_path: Path, result: SuiteResult) -> None:
    """Every row so far as JSON, atomically: rewritten after each preset, so a run cut short keeps its rows."""
    write_atomically(json_path, (json.dumps([row.as_dict() for row in result.rows], indent=1) + "\n").encode())


def write_outputs(result: SuiteResult, json_path: Path | None, plot_folder: Path | None, images: int) -> None:
    """The rows as JSON, and the two PNGs (each written atomically)."""
    written: list[Path] = []
    if json_path:
        write_rows(json_path, result)
        written.append(json_path)
    if plot_folder:
        from parity.plots import plot_logit_gaps, plot_trajectories

        trajectories, logit_differences = (plot_folder / name for name in PLOTS)
        plotted = [
            plot_trajectories(result.curves, trajectories),
            plot_logit_gaps(result.logit_gaps, logit_differences, images),
        ]
        written += [path for path in plotted if path is not None]
    if written:
        print(f"wrote {', '.join(str(path) for path in written)}")


def main(argv: Sequence[str] | None = None) -> int:
    from jax_impl.cache import enable_compilation_cache

    enable_compilation_cache()  # before the first compile: JAX's programs kept on disk (jax_impl/cache.py)
    args = parse_args(argv)
    tune_glibc_malloc()  # torch_impl/allocator.py: torch's CPU RNNs allocate and free megabytes every step
    suite_checks = tuple(check for check in args.check_list if check != "accuracy")
    options = SuiteOptions(
        suite_checks,
        images=args.images,
        small_lr_steps=args.steps,
        recipe_lr_steps=args.recipe_steps,
        backward=args.backward,
        tf32=args.tf32,
    )
    devices = devices_to_run(args.device)
    with cli_errors(PROG):
        keep_rows = functools.partial(write_rows, args.json) if args.json else lambda _: None
        result = run_suite(
            args.preset_list, load_dataset("mnist", args.data_dir), devices, options, progress, on_preset=keep_rows
        )
        print_rows(result.rows)
        write_outputs(result, args.json, args.plot, args.images)
        failed = any(row.passed is False for row in result.rows)
        if "accuracy" in args.check_list:
            failed |= not check6_passed(args, devices)
    return 1 if failed else 0


def check6_passed(args: argparse.Namespace, devices: list[str]) -> bool:
    """Check 6 on each device: full trainings over seeds (`parity.accuracy`), its own table printed."""
    from parity.accuracy import accuracy_check

    passed = True
    for device in devices:
        if device == "gpu" and not gpu_available()[0]:
            print(f"accuracy on gpu: not run: {gpu_available()[1]}")
            continue
        rows = accuracy_check(
            args.preset_list, args.seed_list, Path(args.work) / device, data_dir=args.data_dir, device=device
        )
        passed &= all(row["passed"] is not False for row in rows)
    return passed


if __name__ == "__main__":
    sys.exit(entry_point(main))
