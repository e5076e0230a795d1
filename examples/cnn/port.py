"""The CNN port declared: weights, submodules and input layout (`python -m examples.cnn.port` proves it).

The two classic bugs of a CNN port are both in this table: a PyTorch kernel is OIHW, a Flax kernel HWIO
(`permute(2, 3, 1, 0)`); and `fc1` reads a flattened NCHW map in PyTorch, a flattened NHWC one in Flax,
so its weight's input features are reordered from (channel, row, column) to (row, column, channel).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from flax import nnx

from common.outputs import entry_point
from examples.cnn import flax_model
from parity import Port, permute, reshape, transpose

CHANNELS, HIDDEN = (8, 16), 64

WEIGHTS = [
    ("conv1.weight", "conv1.kernel", permute(2, 3, 1, 0)),  # OIHW -> HWIO
    ("conv1.bias", "conv1.bias"),
    ("conv2.weight", "conv2.kernel", permute(2, 3, 1, 0)),
    ("conv2.bias", "conv2.bias"),
    # [out, C*H*W] -> [out, C, H, W] -> [H, W, C, out] -> [H*W*C, out]
    ("fc1.weight", "fc1.kernel", reshape(HIDDEN, CHANNELS[1], 5, 5), permute(2, 3, 1, 0), reshape()),
    ("fc1.bias", "fc1.bias"),
    ("fc2.weight", "fc2.kernel", transpose()),
    ("fc2.bias", "fc2.bias"),
]

SUBMODULES = [  # (torch module, Flax module, steps from the torch output to the Flax layout)
    ("conv1", "conv1", permute(0, 2, 3, 1)),  # NCHW -> NHWC
    ("conv2", "conv2", permute(0, 2, 3, 1)),
    ("fc1", "fc1"),
    ("fc2", "fc2"),
]


def make_port(weights=WEIGHTS, flax_options=None) -> Port:
    """The CNN port; the tests pass a changed table or Flax model to plant bugs. (The torch model is imported
    here, not above: the table and the Flax model import without torch, for a reference check.)"""
    from examples.cnn import torch_model

    return Port(
        name="cnn",
        torch_model=lambda: torch_model.CNN(CHANNELS, HIDDEN),
        flax_model=lambda: flax_model.CNN(nnx.Rngs(0), CHANNELS, HIDDEN, **(flax_options or {})),
        weights=weights,
        submodules=SUBMODULES,
        inputs=[permute(0, 2, 3, 1)],  # NCHW -> NHWC
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m examples.cnn.port [--images N]`: every check on real MNIST test images."""
    from examples.mnist import prove_main

    return prove_main(make_port(), channel_axis=True, argv=argv)


if __name__ == "__main__":
    sys.exit(entry_point(main))
