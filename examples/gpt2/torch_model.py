"""The PyTorch side is Hugging Face's own `GPT2LMHeadModel`, as `transformers` ships it: only its config is
chosen here (a small one, random weights, nothing downloaded).

Input `<int64>[batch, tokens]` token ids; output a `CausalLMOutputWithCrossAttentions` whose `logits` are
`<float>[batch, tokens, vocab]`. HF's choices a port must match: `Conv1D` layers (weight `[in, out]`, not a
Linear's `[out, in]`), the tanh GELU (`gelu_new`), LayerNorm epsilon 1e-5, a causal mask, and the head tied to
the token embedding (`lm_head.weight` is `transformer.wte.weight`).
"""

from __future__ import annotations

from typing import Any

VOCAB = 16  # pixel intensities quantised to 16 levels
POSITIONS = 64


def gpt2(width: int = 32, heads: int = 4, layers: int = 2) -> Any:
    """A `GPT2LMHeadModel` over a 16-token vocabulary, dropout off."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.set_verbosity_error()  # the config's default bos/eos ids (50256) are past this small vocabulary
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=POSITIONS,
        n_embd=width,
        n_layer=layers,
        n_head=heads,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config)
