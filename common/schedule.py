"""Where a training run stops to log, evaluate and checkpoint, in global steps."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The run's length and its stops: epoch ends, every `log_every`, `eval_every` and `checkpoint_every` steps."""

    steps_per_epoch: int
    epochs: int
    log_every: int
    eval_every: int
    max_steps: int | None
    checkpoint_every: int = 0

    @property
    def total_steps(self) -> int:
        total = self.steps_per_epoch * self.epochs
        return total if self.max_steps is None else min(total, self.max_steps)

    def next_stop(self, step: int) -> int:
        """The first global step after `step` where the loop must hand back control."""
        stops = [
            self.total_steps,
            (step // self.steps_per_epoch + 1) * self.steps_per_epoch,
            (step // self.log_every + 1) * self.log_every,
        ]
        for every in (self.eval_every, self.checkpoint_every):
            if every:
                stops.append((step // every + 1) * every)
        return min(stops)

    def epoch_ends(self, step: int) -> bool:
        return step % self.steps_per_epoch == 0

    def eval_due(self, step: int) -> bool:
        """A partial evaluation (the config's `eval_images`) is due; epoch ends evaluate on the whole test set."""
        return bool(self.eval_every) and step % self.eval_every == 0

    def checkpoint_due(self, step: int) -> bool:
        return (
            self.epoch_ends(step)
            or step == self.total_steps
            or bool(self.checkpoint_every and step % self.checkpoint_every == 0)
        )
