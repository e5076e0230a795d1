"""Real MNIST test images for the example ports, in the layout each PyTorch model reads."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

from common.cli import OneLineParser
from common.data import images_to_row_sequences, load_dataset
from common.resources import peak_rss_mb
from parity import PORT_CHECKS, STREAMING_CHECKS, Port, PortError, check_port


def mnist_test_inputs(count: int, channel_axis: bool) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` test images in [0, 1]: `[count, 1, 28, 28]` (a CNN's NCHW) or `[count, 28, 28]` (rows)."""
    dataset = load_dataset("mnist", splits=("test",))
    images = images_to_row_sequences(dataset.test_images[:count], "float32")
    return (images[:, None] if channel_axis else images), dataset.test_labels[:count]


def mnist_test_tokens(count: int, levels: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` test images as a language model's data: each image pooled 4x4 to 7x7 pixels, each
    pixel quantised to `levels` tokens, read in row order. Returns token ids `<int64>[count, 48]` and the next
    token at each place, `<int64>[count, 48]`."""
    images, _ = mnist_test_inputs(count, channel_axis=False)
    pooled = images.reshape(count, 7, 4, 7, 4).mean(axis=(2, 4)).reshape(count, 49)
    tokens = np.rint(pooled * (levels - 1)).astype(np.int64)
    return tokens[:, :-1], tokens[:, 1:]


def example_parser(name: str) -> OneLineParser:
    """The flags every example takes: `--images N`, `--checks NAMES`."""
    parser = OneLineParser(prog=f"python -m examples.{name}.port", description=f"prove the {name} port")
    parser.add_argument("--images", type=int, default=64, help="real MNIST test images to check on")
    parser.add_argument(
        "--checks",
        default=None,
        help=f"comma-separated checks to run, some of {','.join(PORT_CHECKS)} (default: all; with --streaming, "
        f"{','.join(STREAMING_CHECKS)})",
    )
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="hold both models in float32, each float64 weight made as it is used: a model too large for a "
        "whole float64 copy (no gradients, trajectory or coverage)",
    )
    parser.add_argument(
        "--coverage",
        action="store_true",
        help="also plant the likeliest bug in each weight entry and report any the checks would miss",
    )
    return parser


def parse_example_args(parser: OneLineParser, argv: Sequence[str] | None):
    """The parsed flags, `--images` positive and `--checks` a list of known names (else exit 2 naming the flag)."""
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error(f"--images must be positive, got {args.images}")
    default = STREAMING_CHECKS if args.streaming else PORT_CHECKS
    args.checks = tuple(name.strip() for name in (args.checks or ",".join(default)).split(",") if name.strip())
    unknown = [name for name in args.checks if name not in PORT_CHECKS]
    if unknown or not args.checks:
        given = ", ".join(unknown) or "none given"
        parser.error(f"--checks: unknown {given}; expected some of {','.join(PORT_CHECKS)}")
    whole = [name for name in args.checks if name not in STREAMING_CHECKS] + (["--coverage"] if args.coverage else [])
    if args.streaming and whole:
        parser.error(f"--streaming: leave out {','.join(whole)}: a check that needs the whole model in float64")
    return args


def prove(
    port: Port,
    images: int,
    channel_axis: bool,
    checks: Sequence[str] = PORT_CHECKS,
    mode: str = "eval",
    coverage: bool = False,
    data: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = None,
    streaming: bool = False,
) -> int:
    """The checks on `images` test images (as `data(images)` gives them: inputs and labels, by default
    `mnist_test_inputs`), the report printed with the time and memory it took; exit 1 on a failure, 2 when the
    check cannot run (one line: it would not fit in memory)."""
    began = time.perf_counter()
    inputs, labels = data(images) if data else mnist_test_inputs(images, channel_axis)
    try:
        report = check_port(port, inputs, labels, checks=checks, mode=mode, coverage=coverage, streaming=streaming)
    except PortError as error:  # a check that cannot run (it would not fit in memory): one line, exit 2
        print(f"python -m examples.{port.name}.port: error: {error}", file=sys.stderr)
        return 2
    print(report.table())
    seconds = time.perf_counter() - began
    print(f"{port.name}: {report.values:,} weights, {seconds:.0f} s, peak RSS {peak_rss_mb() / 1024:.2f} GiB")
    return 0 if report.passed else 1


def prove_main(
    port: Port,
    channel_axis: bool,
    argv: Sequence[str] | None = None,
    data: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = None,
) -> int:
    """`python -m examples.<name>.port [--images N] [--checks NAMES]`: the checks on N images; exit 1 on a failure."""
    args = parse_example_args(example_parser(port.name), argv)
    return prove(
        port, args.images, channel_axis, args.checks, coverage=args.coverage, data=data, streaming=args.streaming
    )
