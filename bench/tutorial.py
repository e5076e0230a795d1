"""The tutorials' training loop in a process of its own, as a user runs their tutorial script.

    python -m bench.tutorial --preset bilstm --steps 200 --data DIR [--malloc tuned]

What a process freed before training decides whether torch's CPU RNNs run in glibc malloc's slow or
fast mode (`common/allocator.py`): timed inside the benchmark's process, the loop would inherit what the
trainers allocated. So it runs here, fresh, and reads the training set as torchvision's MNIST reads it:
one uncompressed array (DIR/train_images.npy, DIR/train_labels.npy, written by the benchmark). Reading
MNIST's 9.9 MB compressed file instead frees a block that by itself puts the process in the fast mode.
The benchmark drives it over stdin/stdout, one JSON line each way: after set-up and a warm-up chunk it
prints `{"ready": ...}`; each line it reads trains `steps` more steps and is answered with their seconds
and Adam's step count; end of input ends it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.allocator import tune_glibc_malloc
from common.cli import OneLineParser
from common.presets import PRESETS, get_preset


def tutorial_loop(config, images: np.ndarray, labels: np.ndarray, steps: int):
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


def resident_mb() -> float:
    """Resident memory of this process now (MiB)."""
    import os

    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def serve(preset: str, steps: int, data: Path, malloc: str) -> None:
    """Set up, warm up, say so; then one timed chunk of `steps` per line of input."""
    allocator = tune_glibc_malloc() if malloc == "tuned" else "default"
    before, began = resident_mb(), time.perf_counter()
    images, labels = np.load(data / "train_images.npy"), np.load(data / "train_labels.npy")
    run, steps_taken = tutorial_loop(get_preset(preset), images, labels, steps)
    run()
    ready = {"ready": True, "malloc": allocator, "warmup_s": time.perf_counter() - began}
    print(json.dumps({**ready, "memory_mb": resident_mb() - before}), flush=True)
    for _ in sys.stdin:
        print(json.dumps({"seconds": run(), "steps_taken": steps_taken()}), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m bench.tutorial", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=tuple(PRESETS), required=True, help="the tutorial's recipe")
    parser.add_argument("--steps", type=int, required=True, help="training steps per timed chunk")
    parser.add_argument(
        "--data", type=Path, required=True, help="folder with train_images.npy (uint8 [n, 28, 28]) and train_labels.npy"
    )
    parser.add_argument(
        "--malloc",
        choices=("default", "tuned"),
        default="default",
        help="glibc malloc as a fresh process has it, or set up as the project's torch commands do",
    )
    args = parser.parse_args(argv)
    if args.steps <= 0:
        parser.error(f"--steps must be positive, got {args.steps}")
    for name in ("train_images.npy", "train_labels.npy"):
        if not (args.data / name).is_file():
            parser.error(f"--data: expected {args.data / name} (the benchmark writes it), not found")
    serve(args.preset, args.steps, args.data, args.malloc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
