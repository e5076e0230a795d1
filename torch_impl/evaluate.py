"""`python -m torch_impl.evaluate --weights FILE`: test accuracy and loss of canonical or tutorial weights."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import torch

from common.commands import evaluate_main
from common.config import Config
from common.outputs import entry_point
from common.trainer import EVAL_BATCH
from common.weights import Weights
from torch_impl.allocator import tune_glibc_malloc
from torch_impl.convert import from_canonical, read_weights
from torch_impl.device import resolve_device
from torch_impl.model import logits_in_batches


def predict_logits(config: Config, weights: Weights, rows: np.ndarray, device: str = "cpu") -> np.ndarray:
    """`<float>[n, classes]` logits of `rows` (`<float>[n, 28, 28]`) under `weights`."""
    torch_device = resolve_device(device)
    model = from_canonical(weights, config, torch_device)
    return logits_in_batches(model, torch.from_numpy(rows).to(torch_device), EVAL_BATCH).cpu().numpy()


def main(argv: Sequence[str] | None = None) -> int:
    tune_glibc_malloc()  # torch_impl/allocator.py: torch's CPU RNNs allocate and free megabytes every batch
    return evaluate_main(argv, framework="torch", read_weights=read_weights, predict_logits=predict_logits)


if __name__ == "__main__":
    sys.exit(entry_point(main))
