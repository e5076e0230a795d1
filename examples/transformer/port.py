"""The Transformer port declared (`python -m examples.transformer.port` proves it).

PyTorch packs q, k and v in one `in_proj_weight <[3W, W]>` (rows q, then k, then v) and `in_proj_bias
<[3W]>`; Flax keeps three projections with kernels `<[W, heads, head_dim]>`: split in three, transpose,
reshape. The output projection `<[W, W]>` becomes a `<[heads, head_dim, W]>` kernel. LayerNorm's weight is
Flax's `scale`.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence

from flax import nnx

from common.cli import OneLineParser
from common.outputs import entry_point
from examples.transformer import flax_model, torch_model
from parity import Port, reshape, split, transpose


@dataclasses.dataclass(frozen=True)
class Size:
    """The encoder's size; the default is the example's, `Size(768, 12, 3072, 12)` a BERT-base-sized one (85M)."""

    width: int = 32
    heads: int = 4
    feedforward: int = 64
    layers: int = 2


QKV = ("query", "key", "value")
QKV_STEPS = (split(3), transpose(), reshape())


def layer_weights(layer: int, qkv: tuple[str, str, str] = QKV) -> list[tuple]:
    """One encoder layer's rows; `qkv` names the Flax projections PyTorch's three row blocks go to."""
    t, f = f"encoder.layers.{layer}", f"layers.{layer}"
    return [
        (
            f"{t}.self_attn.in_proj_weight",
            tuple(f"{f}.self_attn.{p}.kernel" for p in qkv),
            split(3),
            transpose(),
            reshape(),
        ),
        (f"{t}.self_attn.in_proj_bias", tuple(f"{f}.self_attn.{p}.bias" for p in qkv), split(3), reshape()),
        (f"{t}.self_attn.out_proj.weight", f"{f}.self_attn.out.kernel", transpose(), reshape()),
        (f"{t}.self_attn.out_proj.bias", f"{f}.self_attn.out.bias"),
        (f"{t}.linear1.weight", f"{f}.linear1.kernel", transpose()),
        (f"{t}.linear1.bias", f"{f}.linear1.bias"),
        (f"{t}.linear2.weight", f"{f}.linear2.kernel", transpose()),
        (f"{t}.linear2.bias", f"{f}.linear2.bias"),
        (f"{t}.norm1.weight", f"{f}.norm1.scale"),
        (f"{t}.norm1.bias", f"{f}.norm1.bias"),
        (f"{t}.norm2.weight", f"{f}.norm2.scale"),
        (f"{t}.norm2.bias", f"{f}.norm2.bias"),
    ]


def weights(qkv: tuple[str, str, str] = QKV, layers: int = Size.layers) -> list[tuple]:
    return [
        ("embed.weight", "embed.kernel", transpose()),
        ("embed.bias", "embed.bias"),
        ("position", "position"),
        *(row for layer in range(layers) for row in layer_weights(layer, qkv)),
        ("head.weight", "head.kernel", transpose()),
        ("head.bias", "head.bias"),
    ]


def submodules(layers: int = Size.layers) -> list[tuple[str, str]]:
    return [
        ("embed", "embed"),
        *(
            (f"encoder.layers.{layer}.{name}", f"layers.{layer}.{name}")
            for layer in range(layers)
            for name in ("self_attn", "norm1", "linear1", "linear2", "norm2")
        ),
        ("head", "head"),
    ]


def make_port(weight_rows=None, flax_options=None, size: Size = Size()) -> Port:
    """The Transformer port; the tests pass a changed table or Flax model to plant bugs."""
    shape = (size.width, size.heads, size.feedforward, size.layers)
    return Port(
        name="transformer",
        torch_model=lambda: torch_model.TransformerClassifier(*shape),
        flax_model=lambda: flax_model.TransformerClassifier(nnx.Rngs(0), *shape, **(flax_options or {})),
        weights=weight_rows or weights(layers=size.layers),
        submodules=submodules(size.layers),
    )


def build_parser() -> OneLineParser:
    """The example's flags, and the model's size."""
    from examples.mnist import example_parser

    parser = example_parser("transformer")
    parser.add_argument("--width", type=int, default=Size.width, help="model width (768: BERT-base)")
    parser.add_argument("--heads", type=int, default=None, help="attention heads (default: width / 8)")
    parser.add_argument("--feedforward", type=int, default=None, help="feed-forward width (default: 2 x width)")
    parser.add_argument("--layers", type=int, default=Size.layers, help="encoder layers (12: BERT-base)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m examples.transformer.port [--images N] [--checks NAMES] [--width W --heads H --feedforward F
    --layers L]`: the example at any size, up to BERT-base."""
    from examples.mnist import parse_example_args, prove

    parser = build_parser()
    args = parse_example_args(parser, argv)
    heads = args.heads or max(1, args.width // 8)
    size = Size(args.width, heads, args.feedforward or 2 * args.width, args.layers)
    for flag, value in vars(args).items():
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            parser.error(f"--{flag} must be positive, got {value}")
    if size.width % size.heads:
        parser.error(f"--heads: {size.heads} does not divide --width {size.width}")
    port = make_port(size=size)
    return prove(port, args.images, False, args.checks, coverage=args.coverage, streaming=args.streaming)


if __name__ == "__main__":
    sys.exit(entry_point(main))
