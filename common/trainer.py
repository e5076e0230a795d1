"""The contract a framework fulfils to be trained by the shared loop: the `Trainer` protocol."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from common import metrics
from common.config import Config
from common.data import Dataset
from common.weights import Weights

EVAL_BATCH = 2000  # test images per forward pass when evaluating


class Trainer(Protocol):
    """What a framework provides: a model + optimizer on a device, fed by index batches."""

    device: str  # a description of where it runs, e.g. "cpu (2 threads)" or "cuda (NVIDIA H100)"
    compile_seconds: float  # compilation so far, kept out of training time (stays 0 for eager torch)

    def train_steps(self, index_batches: Sequence[np.ndarray]) -> np.ndarray:
        """One optimizer step per batch of training-set indices; returns each step's mean loss."""

    def test_logits(self, count: int) -> np.ndarray:
        """`<float>[count, classes]` logits of the first `count` test images."""

    def canonical_weights(self) -> Weights:
        """The current parameters in the canonical (PyTorch state_dict) layout."""

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """Adam's moments in canonical layout (`adam.exp_avg.<name>`, `adam.exp_avg_sq.<name>`) and `adam.step`."""

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what `optimizer_state` returned, exactly."""

    def peak_device_mb(self) -> float | None:
        """Peak accelerator memory in MiB, or None on a CPU (where the run's peak RSS is the figure)."""


MakeTrainer = Callable[[Config, "Weights | None", Dataset, str], Trainer]


def evaluate_trainer(trainer: Trainer, dataset: Dataset, count: int) -> tuple[float, float]:
    """(loss, accuracy) on the first `count` test images."""
    logits = trainer.test_logits(count)
    labels = dataset.test_labels[:count]
    return metrics.cross_entropy(logits, labels), metrics.accuracy(logits, labels)
