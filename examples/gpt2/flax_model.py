"""The Flax NNX port of Hugging Face's `GPT2LMHeadModel`, written with Flax's own modules.

GPT-2's `Conv1D` layers become `nnx.Linear`s: a `Conv1D` weight is already `[in, out]`, a Linear kernel's
layout, so it goes across as it is (a Linear's `[out, in]` weight is transposed; doing that here keeps the
square `c_proj` shapes and changes the numbers). The head is the token embedding used a second time
(`nnx.Embed.attend`), as HF ties `lm_head.weight` to `transformer.wte.weight`.

What must be set by hand to compute what HF's model does, each a planted bug in examples/gpt2/port.py: the
tanh GELU (`gelu_new`), the causal mask (token t sees tokens 0..t), the tie, LayerNorm epsilon 1e-5.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class Attention(nnx.Module):
    """Causal self-attention: q, k, v packed in one projection (`c_attn`), then `c_proj`."""

    def __init__(self, width: int, heads: int, rngs: nnx.Rngs, mask_offset: int = 0):
        self.c_attn = nnx.Linear(width, 3 * width, rngs=rngs)
        self.c_proj = nnx.Linear(width, width, rngs=rngs)
        self.heads, self.mask_offset = heads, mask_offset

    def __call__(self, x: jax.Array) -> jax.Array:
        batch, tokens, width = x.shape
        q, k, v = (a.reshape(batch, tokens, self.heads, -1) for a in jnp.split(self.c_attn(x), 3, axis=-1))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(q.shape[-1]).astype(x.dtype)
        causal = jnp.tril(jnp.ones((tokens, tokens), bool), k=self.mask_offset)
        weights = jax.nn.softmax(jnp.where(causal, logits, jnp.finfo(logits.dtype).min), axis=-1)
        return self.c_proj(jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, tokens, width))


class MLP(nnx.Module):
    def __init__(self, width: int, rngs: nnx.Rngs, gelu_tanh: bool):
        self.c_fc = nnx.Linear(width, 4 * width, rngs=rngs)
        self.c_proj = nnx.Linear(4 * width, width, rngs=rngs)
        self.gelu_tanh = gelu_tanh

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.c_proj(jax.nn.gelu(self.c_fc(x), approximate=self.gelu_tanh))


class Block(nnx.Module):
    """x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, rngs: nnx.Rngs, epsilon: float, gelu_tanh: bool, mask_offset: int):
        self.ln_1 = nnx.LayerNorm(width, epsilon=epsilon, rngs=rngs)
        self.attn = Attention(width, heads, rngs, mask_offset)
        self.ln_2 = nnx.LayerNorm(width, epsilon=epsilon, rngs=rngs)
        self.mlp = MLP(width, rngs, gelu_tanh)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2(nnx.Module):
    """Token ids `<int>[batch, tokens]` -> logits `<float>[batch, tokens, vocab]`."""

    def __init__(
        self,
        rngs: nnx.Rngs,
        vocab: int = 16,
        positions: int = 64,
        width: int = 32,
        heads: int = 4,
        layers: int = 2,
        epsilon: float = 1e-5,  # HF's layer_norm_epsilon
        gelu_tanh: bool = True,  # HF's gelu_new is the tanh approximation
        mask_offset: int = 0,  # token t sees tokens up to t + mask_offset
        tied: bool = True,  # the head is the token embedding (HF's tie_word_embeddings)
        param_dtype: str = "float32",
    ):
        # nnx.Embed fixes its compute dtype at build, from its parameters' (`dtype or embedding.dtype`): a
        # float64 check must build it with float64 parameters (the port's factory is given the run's dtype)
        self.wte = nnx.Embed(vocab, width, param_dtype=param_dtype, rngs=rngs)
        self.wpe = nnx.Embed(positions, width, param_dtype=param_dtype, rngs=rngs)
        self.h = nnx.List([Block(width, heads, rngs, epsilon, gelu_tanh, mask_offset) for _ in range(layers)])
        self.ln_f = nnx.LayerNorm(width, epsilon=epsilon, rngs=rngs)
        self.lm_head = None if tied else nnx.Linear(width, vocab, use_bias=False, rngs=rngs)

    def __call__(self, ids: jax.Array) -> jax.Array:
        x = self.wte(ids) + self.wpe(jnp.arange(ids.shape[1]))
        for block in self.h:
            x = block(x)
        x = self.ln_f(x)
        return self.wte.attend(x) if self.lm_head is None else self.lm_head(x)
