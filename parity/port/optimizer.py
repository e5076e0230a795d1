"""One optimizer in both frameworks, hyperparameters matched: torch.optim.Adam/SGD and optax.adam/sgd."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

from parity.compare import SMALL_LEARNING_RATE


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """The trajectory check's optimizer, built once per framework from the same hyperparameters; or a project's
    own pair (`make_torch`: the torch model -> its optimizer, `make_optax`: () -> an optax transformation), such
    as its trainers', `kind` and `learning_rate` then describing them (the report's case, the drift's scale)."""

    kind: Literal["adam", "sgd"] = "adam"
    learning_rate: float = SMALL_LEARNING_RATE
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.0  # sgd only
    make_torch: Callable[[Any], Any] | None = None
    make_optax: Callable[[], Any] | None = None

    def torch(self, model: Any) -> Any:
        """The torch optimizer of `model`'s trainable parameters (those with `requires_grad`)."""
        import torch

        if self.make_torch is not None:
            return self.make_torch(model)
        parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
        if self.kind == "adam":
            return torch.optim.Adam(parameters, lr=self.learning_rate, betas=(self.b1, self.b2), eps=self.eps)
        return torch.optim.SGD(parameters, lr=self.learning_rate, momentum=self.momentum)

    def optax(self) -> Any:
        import optax

        if self.make_optax is not None:
            return self.make_optax()
        if self.kind == "adam":
            return optax.adam(self.learning_rate, b1=self.b1, b2=self.b2, eps=self.eps)
        return optax.sgd(self.learning_rate, momentum=self.momentum or None)
