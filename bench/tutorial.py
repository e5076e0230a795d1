"""The tutorials' training loop, as their scripts write it (the benchmark runs it in a fresh process)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from common.config import Config


def tutorial_loop(
    config: Config, images: np.ndarray, labels: np.ndarray, steps: int
) -> tuple[Callable[[], float], Callable[[], int]]:
    """The tutorials' own loop: DataLoader(TensorDataset, shuffle=True), explicit zero h0/c0, nn.LSTM + Linear, Adam.

    Returns a function that trains `steps` more steps and returns the seconds they took, and one that
    reads how many steps Adam has taken.
    """
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    class TutorialRNN(nn.Module):
        def __init__(self):
            super().__init__()
            kind = {"lstm": nn.LSTM, "rnn": nn.RNN, "gru": nn.GRU}[config.cell]
            self.rnn = kind(
                28, config.hidden_size, config.num_layers, batch_first=True, bidirectional=config.bidirectional
            )
            self.out = nn.Linear(config.num_directions * config.hidden_size, 10)

        def forward(self, x):
            zeros = torch.zeros(config.num_layers * config.num_directions, x.size(0), config.hidden_size)
            output, _ = self.rnn(x, (zeros, zeros) if config.cell == "lstm" else zeros)
            return self.out(output[:, -1, :])

    torch.manual_seed(config.seed)
    pixels = torch.from_numpy(images).float().div(255)  # ToTensor's scaling, done once
    loader = DataLoader(TensorDataset(pixels, torch.from_numpy(labels)), batch_size=config.batch_size, shuffle=True)
    model = TutorialRNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    loss_function = nn.CrossEntropyLoss()
    batches = iter(loader)

    def run() -> float:
        nonlocal batches
        began = time.perf_counter()
        for _ in range(steps):
            try:
                x, y = next(batches)
            except StopIteration:
                batches = iter(loader)
                x, y = next(batches)
            loss = loss_function(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return time.perf_counter() - began

    def steps_taken() -> int:
        state = optimizer.state.get(next(iter(model.parameters())), {})
        return int(state["step"]) if "step" in state else 0

    return run, steps_taken
