"""`python -m examples.zoo_traps [--images N]`: the traps table of docs/porting.md, measured. Each planted bug
of the two zoo examples (examples/vit, examples/gpt2) checked on N MNIST test images (16): the float32 and
float64 verdicts of the outputs (their largest gap), and where the check locates it (the first divergence, or
the gradient's worst tensor). Printed as a Markdown table."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from common.cli import OneLineParser
from common.outputs import entry_point


def where(report) -> str:
    """The torch submodule the first divergence names, or the worst gradient's tensor."""
    text = report.first_divergence or ""
    if " submodules: " in text:
        return text.split(" submodules: ", 1)[1].split(" (flax")[0]
    if " gradients: " in text:
        return text.split("worst ", 1)[1].split(",")[0] + " (gradient)"
    return text or "-"


def main(argv: Sequence[str] | None = None) -> int:
    from examples.gpt2 import port as gpt2
    from examples.mnist import mnist_test_inputs, mnist_test_tokens
    from examples.vit import port as vit
    from parity import check_port
    from parity.compare import RESULT_WORDS

    parser = OneLineParser(prog="python -m examples.zoo_traps", description="the zoo examples' planted bugs, measured")
    parser.add_argument("--images", type=int, default=16, help="MNIST test images each check runs on")
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error(f"--images must be positive, got {args.images}")
    print("| model | planted bug | float32 outputs | float64 outputs | located at | expected |")
    print("|---|---|---|---|---|---|")
    for model, data in ((vit, mnist_test_inputs(args.images, True)), (gpt2, mnist_test_tokens(args.images))):
        for bug, (port, expected) in model.planted_bugs().items():
            report = check_port(port, *data, checks=("outputs", "submodules", "gradients"))
            verdicts = []
            for dtype in ("float32", "float64"):
                row = next(r for r in report.rows if r.check == "outputs" and r.dtype == dtype)
                verdicts.append(f"{RESULT_WORDS[row.passed]} ({row.figures.get('max_abs_diff', 0):.2g})")
            print(f"| {port.name} | {bug} | {verdicts[0]} | {verdicts[1]} | `{where(report)}` | `{expected}` |")
    return 0


if __name__ == "__main__":
    sys.exit(entry_point(main))
