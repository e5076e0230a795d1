"""`python -m jax_impl.evaluate --weights FILE`: test accuracy and loss of any canonical weights file."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import jax
import numpy as np

from common.commands import evaluate_main
from common.config import Config
from common.outputs import entry_point
from common.trainer import EVAL_BATCH
from common.weights import Weights
from jax_impl.cache import enable_compilation_cache
from jax_impl.convert import from_canonical, read_weights
from jax_impl.device import resolve_device
from jax_impl.model import enable_dtype, logits_in_batches


def predict_logits(config: Config, weights: Weights, rows: np.ndarray, device: str = "cpu") -> np.ndarray:
    """`<float>[n, classes]` logits of `rows` (`<float>[n, 28, 28]`) under `weights`."""
    enable_dtype(config.dtype)
    jax_device = resolve_device(device)
    model = jax.device_put(from_canonical(weights, config), jax_device)
    return np.asarray(logits_in_batches(model, jax.device_put(rows, jax_device), EVAL_BATCH))


def main(argv: Sequence[str] | None = None) -> int:
    enable_compilation_cache()  # before the first compile: JAX's programs kept on disk (jax_impl/cache.py)
    return evaluate_main(argv, framework="jax", read_weights=read_weights, predict_logits=predict_logits)


if __name__ == "__main__":
    sys.exit(entry_point(main))
