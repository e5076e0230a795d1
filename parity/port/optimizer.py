"""One optimizer in both frameworks, hyperparameters matched: torch.optim.Adam/SGD and optax.adam/sgd."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from parity.compare import SMALL_LEARNING_RATE


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """The trajectory check's optimizer, built once per framework from the same hyperparameters."""

    kind: Literal["adam", "sgd"] = "adam"
    learning_rate: float = SMALL_LEARNING_RATE
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.0  # sgd only

    def torch(self, parameters: Any) -> Any:
        import torch

        if self.kind == "adam":
            return torch.optim.Adam(parameters, lr=self.learning_rate, betas=(self.b1, self.b2), eps=self.eps)
        return torch.optim.SGD(parameters, lr=self.learning_rate, momentum=self.momentum)

    def optax(self) -> Any:
        import optax

        if self.kind == "adam":
            return optax.adam(self.learning_rate, b1=self.b1, b2=self.b2, eps=self.eps)
        return optax.sgd(self.learning_rate, momentum=self.momentum or None)
