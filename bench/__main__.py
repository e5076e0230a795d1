"""`python -m bench`: training throughput of the tutorials' loop, the torch trainer and the JAX trainer.

    python -m bench --presets lstm,bilstm --steps 200 --reps 5
    python -m bench --presets lstm,bilstm --levers            # also every speed lever tried
    python -m bench --presets lstm --sweep batch --sweep hidden --plot sweep.png

The tutorial loop runs in fresh processes of its own, as a user's script runs: once with glibc malloc as
a process starts (the `x tutorial` baseline) and once set up as the torch commands set it up
(torch_impl/allocator.py). Each row: training images/s (median, min-max), the ratio to the tutorial loop,
warm-up and compile seconds, evaluation images/s (10,000 test images in batches of 2000; not in a batch sweep,
whose training batch does not change it), memory (resident memory the
runner's setup added on a CPU; peak allocated on a GPU), and the share of a bound that the model's training
FLOPs reach (3x the forward matmuls): the better of torch's and JAX's float32 matmul throughput measured on
the spot (1024x1024, best of 7 timings). One bound for both, since each framework's own matmul is no bound
for its RNN kernels.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.bound import matmul_gflops
from bench.levers import LEVERS
from bench.runners import bench_preset
from bench.sweep import SWEEPS, plot_sweep, sweep
from common.cli import DEVICE_HELP, DEVICES, OneLineParser, cli_errors, preset_list
from common.console import print_table
from common.data import load_dataset
from common.errors import ConfigError
from common.outputs import claim_output_file, entry_point, write_atomically
from torch_impl.allocator import tune_glibc_malloc

PROG = "python -m bench"


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="lstm,bilstm", help="comma-separated presets")
    parser.add_argument("--steps", type=int, default=200, help="training steps per timed repetition")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions of every runner, round-robin")
    parser.add_argument("--device", choices=DEVICES, default="auto", help=DEVICE_HELP)
    parser.add_argument(
        "--levers",
        nargs="?",
        const="all",
        metavar="NAMES",
        help="also time the speed levers (all, or comma-separated names; see bench/levers.py)",
    )
    parser.add_argument(
        "--sweep",
        choices=tuple(SWEEPS),
        action="append",
        help="images/s of both trainers against batch (32..1024) or hidden (64..512) size; repeatable",
    )
    parser.add_argument("--sweep-images", type=int, default=12800, help="training images per timed sweep repetition")
    parser.add_argument(
        "--sweep-sizes", metavar="N,N,...", help="sizes to sweep (when not given: batch 32..1024, hidden 64..512)"
    )
    parser.add_argument("--plot", metavar="FILE", default="bench-sweep.png", help="PNG for --sweep")
    parser.add_argument("--json", metavar="FILE", help="also write every row as JSON (rewritten after each preset)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json or --plot file")
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.preset_list = preset_list(parser, args.presets)
    if args.steps <= 0 or args.reps <= 0 or args.sweep_images <= 0:
        parser.error("--steps, --reps and --sweep-images must be positive")
    args.sizes = None
    if args.sweep_sizes:
        try:
            args.sizes = [int(size) for size in args.sweep_sizes.split(",")]
        except ValueError:
            args.sizes = [0]
        if min(args.sizes) <= 0:
            parser.error(f"--sweep-sizes: expected positive integers separated by commas, got {args.sweep_sizes!r}")
    try:
        args.json = args.json and claim_output_file(args.json, "--json", overwrite=args.overwrite)
        if args.sweep:
            args.plot = claim_output_file(args.plot, "--plot", overwrite=args.overwrite, plot=True)
    except ConfigError as error:
        parser.error(str(error))
    args.lever_list = []
    if args.levers:
        args.lever_list = list(LEVERS) if args.levers == "all" else args.levers.split(",")
        if any(name not in LEVERS for name in args.lever_list):
            parser.error(f"--levers: expected 'all' or some of {', '.join(map(repr, LEVERS))}, got {args.levers!r}")
    return args


def format_rows(results: list[dict]) -> tuple[tuple[str, ...], list[tuple]]:
    """The benchmark table: a header and one line per runner (the per-process rows are printed apart)."""
    sweeping = any("sweep" in r for r in results)
    header = (
        "preset",
        *(("sweep", "size") if sweeping else ()),
        "runner",
        "train img/s (median)",
        "min-max",
        "x tutorial",
        "warm-up s",
        "compile s",
        "eval img/s",
        "memory MiB",
        "GFLOP/s",
        "% of matmul bound",
    )
    lines = []
    for r in results:
        if r["runner"] == "(process)":
            continue
        memory = (
            f"{r['memory_mb']:+.0f} RSS" if r["peak_device_mb"] is None else f"{r['peak_device_mb']:.0f} device peak"
        )
        swept = (r.get("sweep", "-"), str(r.get("size", "-"))) if sweeping else ()
        lines.append(
            (
                r["preset"],
                *swept,
                r["runner"],
                f"{r['images_per_s']:.0f}",
                f"{r['min']:.0f}-{r['max']:.0f}",
                "-" if r["vs_tutorial"] is None else f"{r['vs_tutorial']:.2f}x",
                f"{r['warmup_s']:.1f}",
                f"{r['compile_s']:.1f}",
                "-" if r["eval_images_per_s"] is None else f"{r['eval_images_per_s']:.0f}",
                memory,
                f"{r['train_gflops']:.1f}",
                "-" if r["bound_share"] is None else f"{100 * r['bound_share']:.1f}%",
            )
        )
    return header, lines


def report(results: list[dict]) -> None:
    print_table(*format_rows(results))
    for r in results:
        if r["runner"] == "(process)":
            print(f"{r['preset']}: process peak RSS {r['peak_rss_mb']:.0f} MiB, {r['seconds']:.0f} s")


def device_kind(requested: str) -> str:
    """`--device` as "cpu" or "gpu" (auto: a GPU when torch sees one)."""
    from torch_impl.device import resolve_device

    with cli_errors(PROG):
        return "gpu" if resolve_device(requested).type == "cuda" else "cpu"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tune_glibc_malloc()  # as the torch trainer's own command does (torch_impl/allocator.py)
    args.device = device_kind(args.device)
    levers = [name for name in args.lever_list if args.device in LEVERS[name].devices]
    skipped = [name for name in args.lever_list if name not in levers]
    if skipped:
        print(f"not on {args.device}: {', '.join(skipped)}")
    devices_needed = max([LEVERS[name].options.get("cpu_devices", 1) for name in levers], default=1)
    if devices_needed > 1:
        import jax

        jax.config.update("jax_num_cpu_devices", devices_needed)  # before JAX starts its CPU client
    with cli_errors(PROG):
        dataset = load_dataset("mnist")
        measured = {framework: matmul_gflops(framework, args.device) for framework in ("torch", "jax")}
        bound = max(measured.values())
        print(
            f"float32 matmul throughput (1024x1024, best of 7, measured now): torch {measured['torch']:.0f} "
            f"GFLOP/s, jax {measured['jax']:.0f} GFLOP/s; bound = the better, {bound:.0f} GFLOP/s"
        )
        results: list[dict] = []
        for preset in args.preset_list:
            results += bench_preset(preset, dataset, args.steps, args.reps, args.device, levers, bound)
            if args.json:  # after each preset: a run cut short keeps the presets it finished
                write_atomically(args.json, (json.dumps(results, indent=1) + "\n").encode())
        report(results)
        for name in levers:
            print(f"  {name}: {LEVERS[name].description}")
        sweep_rows = []
        for kind in args.sweep or []:
            sweep_rows += sweep(
                kind, args.preset_list[0], dataset, args.device, args.reps, args.sweep_images, bound, args.sizes
            )
        if sweep_rows:
            report(sweep_rows)
            plot_sweep(sweep_rows, Path(args.plot))
            print(f"wrote {args.plot}")
        if args.json:
            write_atomically(args.json, (json.dumps(results + sweep_rows, indent=1) + "\n").encode())
            print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(entry_point(main))
