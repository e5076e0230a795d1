"""The Flax NNX port of the Transformer classifier.

`nnx.MultiHeadAttention` keeps separate query, key and value projections with `[width, heads, head_dim]`
kernels where PyTorch packs all three in one `in_proj_weight <[3 * width, width]>`; the port's weight
map splits and reshapes it (examples/transformer/port.py). The rest must match PyTorch's defaults by
hand: post-norm layers, LayerNorm epsilon 1e-5 (Flax's default is 1e-6), exact GELU (JAX's default is
the tanh approximation), no dropout. And one thing float64 found: with dropout off, Flax's attention
calls `jax.nn.dot_product_attention`, which computes the softmax in float32 even for float64 inputs
(a 4e-8 gap in float64, invisible in float32); `exact_attention` below keeps the inputs' dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def exact_attention(query: jax.Array, key: jax.Array, value: jax.Array, **_: object) -> jax.Array:
    """softmax(q k^T / sqrt(head_dim)) v per head, in the inputs' dtype. `[batch, tokens, heads, head_dim]`."""
    logits = jnp.einsum("...qhd,...khd->...hqk", query / jnp.sqrt(query.shape[-1]).astype(query.dtype), key)
    return jnp.einsum("...hqk,...khd->...qhd", jax.nn.softmax(logits, axis=-1), value)


class EncoderLayer(nnx.Module):
    """x = norm1(x + attention(x)); x = norm2(x + linear2(gelu(linear1(x)))), as nn.TransformerEncoderLayer."""

    def __init__(
        self, width: int, heads: int, feedforward: int, rngs: nnx.Rngs, epsilon: float, gelu_tanh: bool, attention
    ):
        self.self_attn = nnx.MultiHeadAttention(heads, width, decode=False, attention_fn=attention, rngs=rngs)
        self.linear1 = nnx.Linear(width, feedforward, rngs=rngs)
        self.linear2 = nnx.Linear(feedforward, width, rngs=rngs)
        self.norm1 = nnx.LayerNorm(width, epsilon=epsilon, rngs=rngs)
        self.norm2 = nnx.LayerNorm(width, epsilon=epsilon, rngs=rngs)
        self.gelu_tanh = gelu_tanh

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.norm1(x + self.self_attn(x))
        return self.norm2(x + self.linear2(jax.nn.gelu(self.linear1(x), approximate=self.gelu_tanh)))


class TransformerClassifier(nnx.Module):
    def __init__(
        self,
        rngs: nnx.Rngs,
        width: int = 32,
        heads: int = 4,
        feedforward: int = 64,
        layers: int = 2,
        epsilon: float = 1e-5,  # PyTorch's layer_norm_eps
        gelu_tanh: bool = False,  # PyTorch's "gelu" is exact
        attention=exact_attention,  # nnx.dot_product_attention: the float32 softmax (see the module docstring)
    ):
        self.embed = nnx.Linear(28, width, rngs=rngs)
        self.position = nnx.Param(jnp.zeros((28, width)))
        self.layers = nnx.List(
            [EncoderLayer(width, heads, feedforward, rngs, epsilon, gelu_tanh, attention) for _ in range(layers)]
        )
        self.head = nnx.Linear(width, 10, rngs=rngs)

    def __call__(self, rows: jax.Array) -> jax.Array:
        x = self.embed(rows) + self.position
        for layer in self.layers:
            x = layer(x)
        return self.head(x.mean(axis=1))
