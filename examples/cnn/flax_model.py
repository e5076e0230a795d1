"""The Flax NNX port of the CNN: the same layers, channels last.

Input `<float>[batch, 28, 28, 1]` (NHWC); output `<float>[batch, 10]` logits. Flattening a NHWC map
orders the features (row, column, channel), not PyTorch's (channel, row, column): the port's weight map
reorders `fc1`'s input features to match (examples/cnn/port.py).
"""

from __future__ import annotations

import jax
from flax import nnx


class CNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, channels: tuple[int, int] = (8, 16), hidden: int = 64, dtype: str | None = None):
        # dtype None: compute in the dtype of the weights and inputs (float64 runs in float64)
        self.conv1 = nnx.Conv(1, channels[0], (5, 5), padding=((2, 2), (2, 2)), dtype=dtype, rngs=rngs)
        self.conv2 = nnx.Conv(channels[0], channels[1], (5, 5), padding="VALID", dtype=dtype, rngs=rngs)
        self.fc1 = nnx.Linear(5 * 5 * channels[1], hidden, dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, 10, dtype=dtype, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        x = nnx.max_pool(nnx.relu(self.conv1(images)), (2, 2), strides=(2, 2))
        x = nnx.max_pool(nnx.relu(self.conv2(x)), (2, 2), strides=(2, 2))
        x = nnx.relu(self.fc1(x.reshape(x.shape[0], -1)))
        return self.fc2(x)
