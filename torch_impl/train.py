"""`python -m torch_impl.train`: train a preset with PyTorch (Adam, cross-entropy) and write the run files."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

from common.commands import train_main
from common.config import Config
from common.data import Dataset, images_to_row_sequences
from common.outputs import entry_point
from common.trainer import EVAL_BATCH
from common.weights import Weights
from torch_impl.allocator import tune_glibc_malloc
from torch_impl.convert import from_canonical, to_canonical
from torch_impl.device import describe_device, peak_memory_mb, resolve_device
from torch_impl.model import SequenceClassifier, build_model, logits_in_batches

AdamImplementation = Literal["fused", "foreach", "for-loop"]


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """How the torch trainer computes, never what: the speed levers `python -m bench --levers` compares."""

    adam: AdamImplementation = "fused"  # one kernel for every parameter; "for-loop" is the tutorials' CPU Adam
    threads: int | None = None  # torch.set_num_threads during training steps (None: torch's default)
    compile: bool = False  # torch.compile the model for the training steps
    flush_denormal: bool = False  # torch.set_flush_denormal(True) during training steps


def make_optimizer(model: nn.Module, config: Config, adam: AdamImplementation = "fused") -> torch.optim.Optimizer:
    """Adam with PyTorch's defaults (betas 0.9, 0.999; eps 1e-8) at the recipe's learning rate.

    The three implementations apply the same update rule; they differ in how many kernels they launch.
    """
    if adam == "fused":
        return torch.optim.Adam(model.parameters(), lr=config.learning_rate, fused=True)
    return torch.optim.Adam(model.parameters(), lr=config.learning_rate, foreach=adam == "foreach")


def loss_fn(model: Callable[[torch.Tensor], torch.Tensor], rows: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy over the batch (`nn.CrossEntropyLoss()`, as the tutorials use it)."""
    return nn.functional.cross_entropy(model(rows), labels)


def train_step(
    model: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    rows: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """One Adam step on the batch's mean cross-entropy; returns the (detached) loss before the step."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, rows, labels)
    loss.backward()
    optimizer.step()
    return loss.detach()


@contextlib.contextmanager
def process_settings(options: TrainOptions) -> Iterator[None]:
    """torch's process-wide thread count and denormal flushing as `options` ask, restored afterwards."""
    threads = torch.get_num_threads()
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    if options.flush_denormal:
        torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if options.flush_denormal:
            torch.set_flush_denormal(False)


class TorchTrainer:
    """Model, Adam and the whole dataset on one device; batches are index slices of device tensors."""

    def __init__(
        self,
        config: Config,
        weights: Weights | None,
        dataset: Dataset,
        device: str,
        options: TrainOptions = TrainOptions(),
    ):
        self.config, self.options = config, options
        self.torch_device = resolve_device(device)
        self.device = describe_device(self.torch_device)
        self.compile_seconds = 0.0
        model = build_model(config, native_seed=config.seed) if weights is None else from_canonical(weights, config)
        self.model: SequenceClassifier = model.to(self.torch_device)
        self.optimizer = make_optimizer(self.model, config, options.adam)
        self.step_model: Callable[[torch.Tensor], torch.Tensor] = (
            torch.compile(self.model) if options.compile else self.model
        )
        self.train_rows = self._to_device(images_to_row_sequences(dataset.train_images, config.dtype))
        self.train_labels = self._to_device(dataset.train_labels)
        self.test_rows = self._to_device(images_to_row_sequences(dataset.test_images, config.dtype))

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.torch_device)

    def train_steps(self, index_batches: Sequence[np.ndarray]) -> np.ndarray:
        self.model.train()
        losses = []
        with process_settings(self.options):
            for indices in index_batches:
                index = self._to_device(indices)
                losses.append(
                    train_step(self.step_model, self.optimizer, self.train_rows[index], self.train_labels[index])
                )
        return torch.stack(losses).cpu().numpy()

    def test_logits(self, count: int) -> np.ndarray:
        return logits_in_batches(self.model, self.test_rows[:count], EVAL_BATCH).cpu().numpy()

    def canonical_weights(self) -> Weights:
        return to_canonical(self.model)

    def peak_device_mb(self) -> float | None:
        return peak_memory_mb(self.torch_device)

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """Adam's moments under canonical names, and its step count (0 before the first step)."""
        state, step = {}, 0
        for name, parameter in self.model.named_parameters():
            moments = self.optimizer.state.get(parameter, {})
            for key in ("exp_avg", "exp_avg_sq"):
                value = moments.get(key)
                state[f"adam.{key}.{name}"] = (
                    np.zeros(parameter.shape, parameter.detach().cpu().numpy().dtype)
                    if value is None
                    else value.detach().cpu().numpy().copy()
                )
            step = int(moments["step"]) if "step" in moments else step
        state["adam.step"] = np.array([step], dtype=np.int64)
        return state

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        step = int(state["adam.step"][0])
        if step == 0:
            return
        fused = self.options.adam == "fused"  # fused Adam keeps its step as a float32 tensor on the device
        for name, parameter in self.model.named_parameters():
            self.optimizer.state[parameter] = {
                "step": torch.tensor(float(step), dtype=torch.float32, device=parameter.device if fused else "cpu"),
                "exp_avg": torch.from_numpy(state[f"adam.exp_avg.{name}"].copy()).to(self.torch_device),
                "exp_avg_sq": torch.from_numpy(state[f"adam.exp_avg_sq.{name}"].copy()).to(self.torch_device),
            }


def versions() -> dict[str, str | int | None]:
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": cudnn}


def main(argv: Sequence[str] | None = None) -> int:
    malloc = tune_glibc_malloc()  # before the first large block: torch's CPU RNN workspaces (torch_impl/allocator.py)
    return train_main(
        argv, framework="torch", make_trainer=TorchTrainer, versions=lambda: {**versions(), "malloc": malloc}
    )


if __name__ == "__main__":
    sys.exit(entry_point(main))
