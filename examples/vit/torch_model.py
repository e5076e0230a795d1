"""The PyTorch side is Hugging Face's own `ViTForImageClassification`, as `transformers` ships it: only its
config is chosen here (a small one, random weights, nothing downloaded).

Input `<float>[batch, 1, 28, 28]` (NCHW, pixels in [0, 1]); output an `ImageClassifierOutput` whose `logits`
are `<float>[batch, 10]`. HF's choices a port must match: exact GELU (`hidden_act="gelu"`), LayerNorm
epsilon 1e-12, pre-norm layers, the head on the class token after a final LayerNorm.
"""

from __future__ import annotations

from typing import Any


def vit(width: int = 32, heads: int = 4, mlp: int = 64, layers: int = 2) -> Any:
    """A `ViTForImageClassification` for 28x28 one-channel images in 7x7 patches, dropout off."""
    from transformers import ViTConfig, ViTForImageClassification

    options: dict[str, Any] = {"num_labels": 10}  # a PretrainedConfig keyword, not one of ViTConfig's own
    config = ViTConfig(
        image_size=28,
        patch_size=7,
        num_channels=1,
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=mlp,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **options,
    )
    return ViTForImageClassification(config)
