"""The PyTorch ResNet: a 3x3 stem, two BasicBlocks (the second strided, with a 1x1 strided shortcut), global
average pooling and a linear head, BatchNorm after every convolution as in torchvision's ResNet.

Input `<float>[batch, 1, 28, 28]` (NCHW), pixels in [0, 1]; output `<float>[batch, 10]` logits.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), torchvision's BasicBlock."""

    def __init__(self, channels_in: int, channels_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels_in, channels_out, 1, stride, bias=False), nn.BatchNorm2d(channels_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, channels: tuple[int, int] = (8, 16)):
        super().__init__()
        self.conv = nn.Conv2d(1, channels[0], 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels[0])
        self.block1 = BasicBlock(channels[0], channels[0], 1)
        self.block2 = BasicBlock(channels[0], channels[1], 2)  # 28x28 -> 14x14
        self.head = nn.Linear(channels[1], 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(images)))
        x = self.block2(self.block1(x))
        return self.head(x.mean(dim=(2, 3)))
