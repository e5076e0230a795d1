"""Hugging Face's ViT onto the Flax NNX port, declared (`python -m examples.vit.port` proves it).

HF keeps each attention projection as its own `nn.Linear` (`q_proj`, `k_proj`, `v_proj`: `<[W, W]>`, `o_proj`);
`nnx.MultiHeadAttention` keeps `query`, `key`, `value` kernels `<[W, heads, head_dim]>` and an `out` kernel
`<[heads, head_dim, W]>`: transpose, then reshape. The patch embedding is a Conv2d (OIHW -> HWIO), the images
NCHW -> NHWC. HF returns an `ImageClassifierOutput`; the port compares its `logits` (`torch_forward`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from flax import nnx

from common.outputs import entry_point
from examples.vit import flax_model, torch_model
from parity import Port, permute, reshape, transpose

ROLES = {"q_proj": "query", "k_proj": "key", "v_proj": "value"}


def layer_weights(layer: int, roles: dict[str, str] = ROLES) -> list[tuple]:
    """One layer's rows; `roles` says which Flax projection each of HF's q, k, v goes to."""
    t, f = f"vit.layers.{layer}", f"layers.{layer}"
    rows: list[tuple] = []
    for hf, role in roles.items():
        rows += [
            (f"{t}.attention.{hf}.weight", f"{f}.attention.{role}.kernel", transpose(), reshape()),
            (f"{t}.attention.{hf}.bias", f"{f}.attention.{role}.bias", reshape()),
        ]
    return [
        *rows,
        (f"{t}.attention.o_proj.weight", f"{f}.attention.out.kernel", transpose(), reshape()),
        (f"{t}.attention.o_proj.bias", f"{f}.attention.out.bias"),
        (f"{t}.layernorm_before.weight", f"{f}.norm1.scale"),
        (f"{t}.layernorm_before.bias", f"{f}.norm1.bias"),
        (f"{t}.layernorm_after.weight", f"{f}.norm2.scale"),
        (f"{t}.layernorm_after.bias", f"{f}.norm2.bias"),
        (f"{t}.mlp.fc1.weight", f"{f}.mlp.fc1.kernel", transpose()),
        (f"{t}.mlp.fc1.bias", f"{f}.mlp.fc1.bias"),
        (f"{t}.mlp.fc2.weight", f"{f}.mlp.fc2.kernel", transpose()),
        (f"{t}.mlp.fc2.bias", f"{f}.mlp.fc2.bias"),
    ]


def weights(layers: int = 2, roles: dict[str, str] = ROLES) -> list[tuple]:
    return [
        ("vit.embeddings.cls_token", "cls"),
        ("vit.embeddings.position_embeddings", "position"),
        ("vit.embeddings.patch_embeddings.projection.weight", "patch.kernel", permute(2, 3, 1, 0)),
        ("vit.embeddings.patch_embeddings.projection.bias", "patch.bias"),
        *(row for layer in range(layers) for row in layer_weights(layer, roles)),
        ("vit.layernorm.weight", "norm.scale"),
        ("vit.layernorm.bias", "norm.bias"),
        ("classifier.weight", "head.kernel", transpose()),
        ("classifier.bias", "head.bias"),
    ]


def submodules(layers: int = 2) -> list[tuple]:
    return [
        ("vit.embeddings.patch_embeddings.projection", "patch", permute(0, 2, 3, 1)),
        *(
            (f"vit.layers.{layer}.{hf}", f"layers.{layer}.{flax}")
            for layer in range(layers)
            for hf, flax in (
                ("layernorm_before", "norm1"),
                ("attention", "attention"),
                ("layernorm_after", "norm2"),
                ("mlp.fc1", "mlp.fc1"),
                ("mlp", "mlp"),
            )
        ),
        ("vit.layernorm", "norm"),
        ("classifier", "head"),
    ]


def logits(model, images):
    """HF's model called as its users call it: `model(pixel_values).logits`."""
    return model(images).logits


def make_port(weight_rows=None, flax_options=None) -> Port:
    """The ViT port; the tests pass a changed table or Flax model to plant bugs."""
    return Port(
        name="vit",
        torch_model=torch_model.vit,
        flax_model=lambda: flax_model.ViT(nnx.Rngs(0), **(flax_options or {})),
        weights=weight_rows or weights(),
        submodules=submodules(),
        inputs=[permute(0, 2, 3, 1)],
        torch_forward=logits,
    )


def planted_bugs() -> dict[str, tuple[Port, str]]:
    """Each bug a porter of this model could make, as a port, and the torch submodule it must be found at."""
    from flax import nnx

    swapped = {"q_proj": "key", "k_proj": "query", "v_proj": "value"}
    return {
        "tanh GELU for HF's exact one": (make_port(flax_options={"gelu_tanh": True}), "vit.layers.0.mlp"),
        "LayerNorm epsilon at Flax's 1e-6": (
            make_port(flax_options={"epsilon": 1e-6}),
            "vit.layers.0.layernorm_before",
        ),
        "query and key swapped": (make_port(weights(roles=swapped)), "vit.layers.0.attention"),
        "softmax in float32": (
            make_port(flax_options={"attention": nnx.dot_product_attention}),
            "vit.layers.0.attention",
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m examples.vit.port [--images N] [--checks NAMES] [--coverage]`: the checks on N MNIST test images."""
    from examples.mnist import prove_main

    return prove_main(make_port(), channel_axis=True, argv=argv)


if __name__ == "__main__":
    sys.exit(entry_point(main))
