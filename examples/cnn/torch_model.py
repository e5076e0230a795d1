"""The PyTorch CNN: two 5x5 convolutions with ReLU and 2x2 max pooling, then two linear layers.

Input `<float>[batch, 1, 28, 28]` (NCHW), pixels in [0, 1]; output `<float>[batch, 10]` logits.
"""

from __future__ import annotations

import torch
from torch import nn


class CNN(nn.Module):
    def __init__(self, channels: tuple[int, int] = (8, 16), hidden: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels[0], 5, padding=2)  # 28x28
        self.conv2 = nn.Conv2d(channels[0], channels[1], 5)  # 14x14 -> 10x10
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(channels[1] * 5 * 5, hidden)  # flattened in (channel, row, column) order
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(images)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)
