"""Loss, accuracy and predictions computed from logits with NumPy, the same for both frameworks."""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of `<float>[batch, classes]`, computed in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    result: np.ndarray = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return result


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy over the batch, as `nn.CrossEntropyLoss()` and optax compute it."""
    log_probs = log_softmax(logits)
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def predictions(logits: np.ndarray) -> np.ndarray:
    """The predicted class of every row (the first maximum on ties, as `argmax` in both frameworks)."""
    classes: np.ndarray = np.asarray(logits).argmax(axis=1)
    return classes


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction in [0, 1] of rows whose predicted class equals the label."""
    return float((predictions(logits) == np.asarray(labels)).mean())
