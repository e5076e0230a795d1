"""Hugging Face's GPT-2 onto the Flax NNX port, declared (`python -m examples.gpt2.port` proves it).

GPT-2's `Conv1D` weights are already `[in, out]`: each goes to an `nnx.Linear` kernel as it is, with no
`transpose()` (a Linear's would be; on the square `c_proj` a transpose keeps the shape and changes the numbers).
`lm_head.weight` is tied to `transformer.wte.weight`: one tensor, mapped once, onto the one `wte.embedding`
the Flax model uses twice (`nnx.Embed.attend`). HF returns a `CausalLMOutputWithCrossAttentions` holding a
cache; the port compares its `logits`, called without a cache (`torch_forward`). The loss is the language
model's: logits `[batch, tokens, vocab]` against the next token at each place, `[batch, tokens]`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from flax import nnx

from common.outputs import entry_point
from examples.gpt2 import flax_model, torch_model
from parity import Port, transpose

LAYERS = 2


def layer_weights(layer: int, c_proj=()) -> list[tuple]:
    """One block's rows; `c_proj`: steps for the attention's square output projection (a planted bug's)."""
    t, f = f"transformer.h.{layer}", f"h.{layer}"
    return [
        (f"{t}.ln_1.weight", f"{f}.ln_1.scale"),
        (f"{t}.ln_1.bias", f"{f}.ln_1.bias"),
        (f"{t}.attn.c_attn.weight", f"{f}.attn.c_attn.kernel"),
        (f"{t}.attn.c_attn.bias", f"{f}.attn.c_attn.bias"),
        (f"{t}.attn.c_proj.weight", f"{f}.attn.c_proj.kernel", *c_proj),
        (f"{t}.attn.c_proj.bias", f"{f}.attn.c_proj.bias"),
        (f"{t}.ln_2.weight", f"{f}.ln_2.scale"),
        (f"{t}.ln_2.bias", f"{f}.ln_2.bias"),
        (f"{t}.mlp.c_fc.weight", f"{f}.mlp.c_fc.kernel"),
        (f"{t}.mlp.c_fc.bias", f"{f}.mlp.c_fc.bias"),
        (f"{t}.mlp.c_proj.weight", f"{f}.mlp.c_proj.kernel"),
        (f"{t}.mlp.c_proj.bias", f"{f}.mlp.c_proj.bias"),
    ]


def weights(layers: int = LAYERS, c_proj=(), tied: bool = True) -> list[tuple]:
    """The table; `tied=False` for a Flax model with its own head (`lm_head.weight` mapped apart)."""
    return [
        ("transformer.wte.weight", "wte.embedding"),
        ("transformer.wpe.weight", "wpe.embedding"),
        *(row for layer in range(layers) for row in layer_weights(layer, c_proj)),
        ("transformer.ln_f.weight", "ln_f.scale"),
        ("transformer.ln_f.bias", "ln_f.bias"),
        *([] if tied else [("lm_head.weight", "lm_head.kernel", transpose())]),
    ]


def submodules(layers: int = LAYERS) -> list[tuple]:
    return [
        *(
            (f"transformer.h.{layer}.{name}", f"h.{layer}.{name}")
            for layer in range(layers)
            for name in ("ln_1", "attn", "ln_2", "mlp.c_fc", "mlp")
        ),
        ("transformer.ln_f", "ln_f"),
    ]


def logits(model, ids):
    """HF's model called as a check needs it: no cache, its `logits`."""
    return model(ids, use_cache=False).logits


def make_port(weight_rows=None, flax_options=None) -> Port:
    """The GPT-2 port; the tests pass a changed table or Flax model to plant bugs."""
    return Port(
        name="gpt2",
        torch_model=torch_model.gpt2,
        flax_model=lambda dtype: flax_model.GPT2(nnx.Rngs(0), param_dtype=dtype, **(flax_options or {})),
        weights=weight_rows or weights(),
        submodules=submodules(),
        torch_forward=logits,
    )


def planted_bugs() -> dict[str, tuple[Port, str]]:
    """Each bug a porter of this model could make, as a port, and where it must be found: a torch submodule, or
    (the tie) the Flax parameter whose gradient differs."""
    return {
        "c_proj transposed": (make_port(weights(c_proj=(transpose(),))), "transformer.h.0.attn"),
        "the tie broken (a separate lm_head)": (make_port(weights(tied=False), {"tied": False}), "wte.embedding"),
        "causal mask off by one": (make_port(flax_options={"mask_offset": 1}), "transformer.h.0.attn"),
        "gelu_new replaced by exact GELU": (make_port(flax_options={"gelu_tanh": False}), "transformer.h.0.mlp"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m examples.gpt2.port [--images N] [--checks NAMES] [--coverage]`: the checks on N MNIST test
    images, each read as 48 tokens."""
    from examples.mnist import mnist_test_tokens, prove_main

    return prove_main(make_port(), channel_axis=False, argv=argv, data=mnist_test_tokens)


if __name__ == "__main__":
    sys.exit(entry_point(main))
