"""The Flax NNX port of Hugging Face's `ViTForImageClassification`, written with Flax's own modules.

A patch `nnx.Conv` (stride = kernel = 7) on NHWC images, a class token and a position table, pre-norm
layers of `nnx.MultiHeadAttention` (separate query, key and value kernels `[width, heads, head_dim]`, an out
kernel `[heads, head_dim, width]`) and a two-layer MLP, a final LayerNorm, a linear head on the class token.

What must be set by hand to compute what HF's model does, each a planted bug in examples/vit/port.py:
LayerNorm epsilon 1e-12 (Flax's default is 1e-6), exact GELU (`jax.nn.gelu`'s default is the tanh
approximation), and the attention's softmax in the inputs' dtype: with dropout off, Flax's default attention
calls `jax.nn.dot_product_attention`, which computes it in float32 even for float64 inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from examples.transformer.flax_model import exact_attention  # the softmax in the inputs' dtype


class MLP(nnx.Module):
    def __init__(self, width: int, hidden: int, rngs: nnx.Rngs, gelu_tanh: bool):
        self.fc1 = nnx.Linear(width, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, width, rngs=rngs)
        self.gelu_tanh = gelu_tanh

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=self.gelu_tanh))


class Layer(nnx.Module):
    """x = x + attention(norm1(x)); x = x + mlp(norm2(x))."""

    def __init__(
        self, width: int, heads: int, mlp: int, rngs: nnx.Rngs, epsilon: float, gelu_tanh: bool, attention: Callable
    ):
        self.norm1 = nnx.LayerNorm(width, epsilon=epsilon, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(heads, width, decode=False, attention_fn=attention, rngs=rngs)
        self.norm2 = nnx.LayerNorm(width, epsilon=epsilon, rngs=rngs)
        self.mlp = MLP(width, mlp, rngs, gelu_tanh)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nnx.Module):
    """Images `<float>[batch, 28, 28, 1]` (NHWC) -> logits `<float>[batch, 10]`."""

    def __init__(
        self,
        rngs: nnx.Rngs,
        width: int = 32,
        heads: int = 4,
        mlp: int = 64,
        layers: int = 2,
        epsilon: float = 1e-12,  # HF's layer_norm_eps
        gelu_tanh: bool = False,  # HF's "gelu" is exact
        attention: Callable = exact_attention,  # nnx.dot_product_attention: the float32 softmax (see above)
    ):
        self.patch = nnx.Conv(1, width, (7, 7), strides=(7, 7), padding="VALID", rngs=rngs)
        self.cls = nnx.Param(jnp.zeros((1, 1, width)))
        self.position = nnx.Param(jnp.zeros((1, 17, width)))
        self.layers = nnx.List([Layer(width, heads, mlp, rngs, epsilon, gelu_tanh, attention) for _ in range(layers)])
        self.norm = nnx.LayerNorm(width, epsilon=epsilon, rngs=rngs)
        self.head = nnx.Linear(width, 10, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        patches = self.patch(images)
        tokens = patches.reshape(patches.shape[0], -1, patches.shape[-1])
        cls = jnp.broadcast_to(self.cls[...], (tokens.shape[0], 1, tokens.shape[-1])).astype(tokens.dtype)
        x = jnp.concatenate([cls, tokens], axis=1) + self.position[...]
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x)[:, 0])
