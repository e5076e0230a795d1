"""The Flax NNX port, built from Flax's own recurrent modules and nothing written for the port.

Each layer is `nnx.Bidirectional(nnx.RNN(nnx.LSTMCell), nnx.RNN(nnx.LSTMCell))`: the backward RNN reads
the rows last to first and keeps its outputs in input order, as PyTorch's reverse direction does, and the
two are concatenated forward first. `nnx.LSTMCell` keeps eight Linear layers (`ii`, `if_`, `ig`, `io` on
the input, without bias; `hi`, `hf`, `hg`, `ho` on the state, with one bias each) where `nn.LSTM` keeps
two stacked matrices and two biases; the table (examples/lstm/port.py) splits the matrices and sums the
biases. `param_dtype` also sets the dtype of the zero initial state, so a float64 run is float64 throughout.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx


def direction(features: int, hidden: int, rngs: nnx.Rngs, param_dtype) -> nnx.RNN:
    return nnx.RNN(nnx.LSTMCell(features, hidden, param_dtype=param_dtype, rngs=rngs), rngs=rngs)


class LSTMClassifier(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, hidden: int = 32, layers: int = 2, param_dtype=jnp.float32):
        self.layers = nnx.List(
            [
                nnx.Bidirectional(
                    direction(28 if layer == 0 else 2 * hidden, hidden, rngs, param_dtype),
                    direction(28 if layer == 0 else 2 * hidden, hidden, rngs, param_dtype),
                    rngs=rngs,
                )
                for layer in range(layers)
            ]
        )
        self.head = nnx.Linear(2 * hidden, 10, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, rows: jax.Array) -> jax.Array:
        x: Any = rows
        for layer in self.layers:
            x = layer(x)  # [batch, 28, 2 * hidden]: forward outputs, then backward ones
        return self.head(x[:, -1, :])
