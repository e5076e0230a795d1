"""The ResNet port declared (`python -m examples.resnet.port [--mode train]` proves it).

Convolution kernels go OIHW -> HWIO; BatchNorm's `weight` is Flax's `scale`, its buffers `running_mean` and
`running_var` are Flax's `nnx.BatchStat`s `mean` and `var`; `num_batches_tracked` has no counterpart (Flax
counts nothing: its momentum is fixed) and is declared not ported. `nn.Sequential`'s `shortcut.0` is
`nnx.Sequential`'s `shortcut.layers.0`. Train mode compares the batch statistics' outputs, the running
statistics after a forward pass and after every training step.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from flax import nnx

from common.outputs import entry_point
from examples.resnet import flax_model, torch_model
from parity import Port, permute, transpose

CHANNELS = (8, 16)
NHWC = permute(0, 2, 3, 1)


def batch_norm(torch_name: str, flax_name: str, statistics: tuple[str, str] = ("mean", "var")) -> list[tuple]:
    """One BatchNorm's rows; `statistics` names the Flax variables running_mean and running_var go to."""
    return [
        (f"{torch_name}.weight", f"{flax_name}.scale"),
        (f"{torch_name}.bias", f"{flax_name}.bias"),
        (f"{torch_name}.running_mean", f"{flax_name}.{statistics[0]}"),
        (f"{torch_name}.running_var", f"{flax_name}.{statistics[1]}"),
    ]


def weights(statistics: tuple[str, str] = ("mean", "var")) -> list[tuple]:
    rows = [("conv.weight", "conv.kernel", permute(2, 3, 1, 0)), *batch_norm("bn", "bn", statistics)]
    for block in ("block1", "block2"):
        for layer in ("1", "2"):
            rows += [(f"{block}.conv{layer}.weight", f"{block}.conv{layer}.kernel", permute(2, 3, 1, 0))]
            rows += batch_norm(f"{block}.bn{layer}", f"{block}.bn{layer}", statistics)
    rows += [("block2.shortcut.0.weight", "block2.shortcut.layers.0.kernel", permute(2, 3, 1, 0))]
    rows += batch_norm("block2.shortcut.1", "block2.shortcut.layers.1", statistics)
    return [*rows, ("head.weight", "head.kernel", transpose()), ("head.bias", "head.bias")]


def submodules() -> list[tuple]:
    rows: list[tuple] = [("conv", "conv", NHWC), ("bn", "bn", NHWC)]
    for block in ("block1", "block2"):
        rows += [(f"{block}.{name}", f"{block}.{name}", NHWC) for name in ("conv1", "bn1", "conv2", "bn2")]
    rows += [("block2.shortcut", "block2.shortcut", NHWC), ("head", "head")]
    return rows


def make_port(weight_rows=None, flax_options=None) -> Port:
    """The ResNet port; the tests pass a changed table or Flax model to plant bugs."""
    options = flax_options or {}
    return Port(
        name="resnet",
        torch_model=lambda: torch_model.ResNet(CHANNELS),
        flax_model=lambda dtype="float32": flax_model.ResNet(nnx.Rngs(0), CHANNELS, param_dtype=dtype, **options),
        weights=weight_rows or weights(),
        submodules=submodules(),
        inputs=[NHWC],
        not_ported=["*.num_batches_tracked"],
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m examples.resnet.port [--images N] [--checks NAMES] [--mode eval|train] [--stock-batchnorm]`."""
    from examples.mnist import example_parser, parse_example_args, prove

    parser = example_parser("resnet")
    parser.add_argument("--mode", choices=("eval", "train"), default="eval", help="both models' mode")
    parser.add_argument(
        "--stock-batchnorm",
        action="store_true",
        help="Flax's own nnx.BatchNorm (biased running variance): what train mode reports for it",
    )
    args = parse_example_args(parser, argv)
    port = make_port(flax_options={"stock_batchnorm": True} if args.stock_batchnorm else None)
    return prove(port, args.images, True, args.checks, args.mode, args.coverage, streaming=args.streaming)


if __name__ == "__main__":
    sys.exit(entry_point(main))
