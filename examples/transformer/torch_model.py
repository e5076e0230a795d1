"""The PyTorch Transformer classifier: rows embedded, a learned position table, `nn.TransformerEncoder`
(post-norm layers, exact GELU, dropout 0), the mean over tokens, a linear head.

Input `<float>[batch, 28, 28]` (row t of an image is token t), pixels in [0, 1]; output `<float>[batch, 10]`.
"""

from __future__ import annotations

import torch
from torch import nn


class TransformerClassifier(nn.Module):
    def __init__(self, width: int = 32, heads: int = 4, feedforward: int = 64, layers: int = 2):
        super().__init__()
        self.embed = nn.Linear(28, width)
        self.position = nn.Parameter(0.02 * torch.randn(28, width))
        layer = nn.TransformerEncoderLayer(
            width, heads, feedforward, dropout=0.0, activation="gelu", batch_first=True, layer_norm_eps=1e-5
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, 10)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder(self.embed(rows) + self.position)
        return self.head(tokens.mean(dim=1))
