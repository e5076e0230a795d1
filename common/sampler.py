"""The seeded batch sampler both frameworks share: the same index batches for the same (seed, epoch, step)."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class BatchSampler:
    """Seeded, shuffled index batches: the same sequence for the same (seed, epoch) in every framework.

    Each epoch is a fresh permutation drawn from `np.random.default_rng([seed, epoch])`; the last,
    partial batch is kept, as the tutorials' `DataLoader(shuffle=True)` does.
    """

    num_examples: int
    batch_size: int
    seed: int

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.num_examples // self.batch_size)

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

    def batches(self, epoch: int, start_step: int = 0, stop_step: int | None = None) -> list[np.ndarray]:
        """Index batches `start_step` to `stop_step` (0-based, within the epoch; default: to its end)."""
        order = self.permutation(epoch)
        stop_step = self.steps_per_epoch if stop_step is None else stop_step
        return [order[step * self.batch_size : (step + 1) * self.batch_size] for step in range(start_step, stop_step)]

    def batch(self, epoch: int, step: int) -> np.ndarray:
        return self.batches(epoch, step, step + 1)[0]
