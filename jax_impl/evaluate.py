"""`python -m jax_impl.evaluate --weights FILE`: test accuracy and loss of any canonical weights file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from common.config import Config
from common.errors import SeqMnistError
from common.run import EVAL_BATCH, evaluate_main
from common.weights import Weights, load_weights
from jax_impl.convert import from_canonical
from jax_impl.model import enable_dtype, logits_in_batches
from jax_impl.train import resolve_device


def predict_logits(config: Config, weights: Weights, rows: np.ndarray, device: str = "cpu") -> np.ndarray:
    """`<float>[n, classes]` logits of `rows` (`<float>[n, 28, 28]`) under `weights`."""
    enable_dtype(config.dtype)
    jax_device = resolve_device(device)
    model = jax.device_put(from_canonical(weights, config), jax_device)
    return np.asarray(logits_in_batches(model, jax.device_put(rows, jax_device), EVAL_BATCH))


def read_weights(path: str, preset: Config | None) -> tuple[Weights, Config]:
    """A canonical .safetensors file; tutorial pickles need torch, so they go through torch_impl.convert."""
    if Path(path).suffix in (".pkl", ".pt", ".pth", ".bin"):
        raise SeqMnistError(f"{path}: a PyTorch pickle; convert it first: python -m torch_impl.convert {path} "
                            "--preset NAME --out FILE.safetensors")
    return load_weights(path, preset)


def main(argv: Sequence[str] | None = None) -> int:
    return evaluate_main(argv, framework="jax", read_weights=read_weights, predict_logits=predict_logits)


if __name__ == "__main__":
    sys.exit(main())
