"""`python -m torch_impl.train`: train a preset with PyTorch (Adam, cross-entropy) and write the run files."""

from __future__ import annotations

import sys
from typing import Sequence

import numpy as np
import torch
from torch import nn

from common.config import Config
from common.data import Dataset, images_to_row_sequences
from common.errors import SeqMnistError
from common.run import EVAL_BATCH, train_main
from common.weights import Weights
from torch_impl.convert import from_canonical, to_canonical
from torch_impl.model import build_model, logits_in_batches


def resolve_device(requested: str) -> torch.device:
    """`auto` -> CUDA when available, else CPU; `gpu`/`cuda` without a GPU is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise SeqMnistError(f"--device {requested}: PyTorch sees no CUDA device")
        return torch.device("cuda")
    return torch.device("cpu")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def make_optimizer(model: nn.Module, config: Config) -> torch.optim.Optimizer:
    """Adam with PyTorch's defaults (betas 0.9, 0.999; eps 1e-8) at the recipe's learning rate.

    `fused=True`: one kernel updates every parameter (same update rule, rounding within the parity
    tolerances); measured 1.08x / 1.05x training throughput on `lstm` / `bilstm` on a 2-core CPU in one
    round-robin, within noise in another (README, Performance).
    """
    return torch.optim.Adam(model.parameters(), lr=config.learning_rate, fused=True)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, rows: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One Adam step on the batch's mean cross-entropy; returns the (detached) loss before the step."""
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(rows), labels)
    loss.backward()
    optimizer.step()
    return loss.detach()


class TorchTrainer:
    """Model, Adam and the whole dataset on one device; batches are index slices of device tensors."""

    def __init__(self, config: Config, weights: Weights | None, dataset: Dataset, device: str):
        self.config = config
        self.torch_device = resolve_device(device)
        self.device = describe_device(self.torch_device)
        self.compile_seconds = 0.0
        model = build_model(config, native_seed=config.seed) if weights is None else from_canonical(weights, config)
        self.model = model.to(self.torch_device)
        self.optimizer = make_optimizer(self.model, config)
        self.train_rows = self._to_device(images_to_row_sequences(dataset.train_images, config.dtype))
        self.train_labels = self._to_device(dataset.train_labels)
        self.test_rows = self._to_device(images_to_row_sequences(dataset.test_images, config.dtype))

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.torch_device)

    def train_steps(self, index_batches: Sequence[np.ndarray]) -> np.ndarray:
        self.model.train()
        losses = []
        for indices in index_batches:
            index = self._to_device(indices)
            losses.append(train_step(self.model, self.optimizer, self.train_rows[index], self.train_labels[index]))
        return torch.stack(losses).cpu().numpy()

    def test_logits(self, count: int) -> np.ndarray:
        return logits_in_batches(self.model, self.test_rows[:count], EVAL_BATCH).cpu().numpy()

    def canonical_weights(self) -> Weights:
        return to_canonical(self.model)

    def peak_device_mb(self) -> float | None:
        """Peak memory allocated by torch on the GPU (None on the CPU: see the run's peak RSS)."""
        if self.torch_device.type != "cuda":
            return None
        return torch.cuda.max_memory_allocated(self.torch_device) / 2**20

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """Adam's moments under canonical names, and its step count (0 before the first step)."""
        state, step = {}, 0
        for name, parameter in self.model.named_parameters():
            moments = self.optimizer.state.get(parameter, {})
            for key in ("exp_avg", "exp_avg_sq"):
                value = moments.get(key)
                state[f"adam.{key}.{name}"] = (np.zeros(parameter.shape, parameter.detach().cpu().numpy().dtype)
                                               if value is None else value.detach().cpu().numpy().copy())
            step = int(moments["step"]) if "step" in moments else step
        state["adam.step"] = np.array([step], dtype=np.int64)
        return state

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        step = int(state["adam.step"][0])
        if step == 0:
            return
        for name, parameter in self.model.named_parameters():
            self.optimizer.state[parameter] = {
                # fused Adam keeps its step as a float32 tensor on the parameter's device
                "step": torch.tensor(float(step), dtype=torch.float32, device=parameter.device),
                "exp_avg": torch.from_numpy(state[f"adam.exp_avg.{name}"].copy()).to(self.torch_device),
                "exp_avg_sq": torch.from_numpy(state[f"adam.exp_avg_sq.{name}"].copy()).to(self.torch_device),
            }


def versions() -> dict:
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": cudnn}


def main(argv: Sequence[str] | None = None) -> int:
    return train_main(argv, framework="torch", make_trainer=TorchTrainer, versions=versions)


if __name__ == "__main__":
    sys.exit(main())
