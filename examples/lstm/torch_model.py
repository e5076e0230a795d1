"""The PyTorch model: a stock `nn.LSTM` (2 layers, bidirectional) read row by row, a linear head on the last step.

Input `<float>[batch, 28, 28]` (28 rows of 28 pixels, batch first); output `<float>[batch, 10]` logits.
"""

from __future__ import annotations

import torch
from torch import nn


class LSTMClassifier(nn.Module):
    def __init__(self, hidden: int = 32, layers: int = 2):
        super().__init__()
        self.lstm = nn.LSTM(28, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, 10)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        output, _ = self.lstm(rows)
        return self.head(output[:, -1, :])
