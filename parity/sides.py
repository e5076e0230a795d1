"""The two ports (and the NumPy oracle) behind one interface, everything in the canonical layout.

Each side answers the same questions for canonical weights and the same rows: logits, every layer's
hidden states, the loss gradients, and a run of Adam steps on given batches. `JaxSide` takes the
conversion function as a parameter so that the tests can hand it a deliberately broken one.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from common.config import Config
from common.weights import Weights
from parity import oracle
from parity.compare import Trajectory

if TYPE_CHECKING:
    import torch

    from jax_impl.model import SequenceClassifier as FlaxModel
    from torch_impl.model import SequenceClassifier as TorchModel


class Side(Protocol):
    """What every side computes for canonical weights: logits and every layer's hidden states."""

    name: str

    def logits(self, config: Config, weights: Weights, rows: np.ndarray) -> np.ndarray: ...

    def hidden_states(self, config: Config, weights: Weights, rows: np.ndarray) -> list[np.ndarray]: ...


class TrainingSide(Side, Protocol):
    """A framework's side: also the loss gradients and a run of Adam steps."""

    def gradients(
        self, config: Config, weights: Weights, rows: np.ndarray, labels: np.ndarray
    ) -> tuple[float, Weights]: ...

    def train(
        self, config: Config, weights: Weights, rows: np.ndarray, labels: np.ndarray, index_batches: list[np.ndarray]
    ) -> Trajectory: ...


class OracleSide:
    name = "numpy"

    def logits(self, config: Config, weights: Weights, rows: np.ndarray) -> np.ndarray:
        return oracle.logits(config, weights, rows)

    def hidden_states(self, config: Config, weights: Weights, rows: np.ndarray) -> list[np.ndarray]:
        return oracle.hidden_states(config, weights, rows)


class TorchSide:
    """PyTorch's nn.LSTM/RNN/GRU through `torch_impl`, on `device` ("cpu" or "cuda")."""

    name = "torch"

    def __init__(self, device: str = "cpu"):
        import torch

        self.device = torch.device(device)

    def _model(self, config: Config, weights: Weights) -> TorchModel:
        from torch_impl.convert import from_canonical

        return from_canonical(weights, config, self.device)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        import torch

        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def logits(self, config: Config, weights: Weights, rows: np.ndarray) -> np.ndarray:
        from torch_impl.model import logits_in_batches

        logits: np.ndarray = logits_in_batches(self._model(config, weights), self._tensor(rows)).cpu().numpy()
        return logits

    def hidden_states(self, config: Config, weights: Weights, rows: np.ndarray) -> list[np.ndarray]:
        """Each layer's output sequence (`SequenceClassifier.layer_outputs`: the layers one at a time)."""
        outputs = self._model(config, weights).layer_outputs(self._tensor(rows))
        return [output.cpu().numpy() for output in outputs]

    def gradients(
        self, config: Config, weights: Weights, rows: np.ndarray, labels: np.ndarray
    ) -> tuple[float, Weights]:
        """Mean cross-entropy (the trainer's `loss_fn`) and its gradient for every canonical tensor."""
        from parity.port.torch_runner import torch_gradients
        from torch_impl.train import loss_fn

        rows_on_device, labels_on_device = self._tensor(rows), self._tensor(labels)
        return torch_gradients(
            self._model(config, weights), lambda model: loss_fn(model, rows_on_device, labels_on_device)
        )

    def train(
        self, config: Config, weights: Weights, rows: np.ndarray, labels: np.ndarray, index_batches: list[np.ndarray]
    ) -> Trajectory:
        """Adam steps with the trainer's own `train_step`, one per batch of indices into `rows`."""
        from torch_impl.convert import to_canonical
        from torch_impl.train import make_optimizer, train_step

        model = self._model(config, weights)
        optimizer = make_optimizer(model, config)
        all_rows, all_labels = self._tensor(rows), self._tensor(labels)
        losses, after = [], []
        for indices in index_batches:
            index = self._tensor(indices)
            losses.append(float(train_step(model, optimizer, all_rows[index], all_labels[index])))
            after.append(to_canonical(model))
        return Trajectory(np.array(losses), after)


class JaxSide:
    """Flax NNX through `jax_impl`, with the canonical -> Flax conversion replaceable (for mutation tests)."""

    name = "jax"

    def __init__(
        self,
        device: str = "cpu",
        from_canonical: Callable[[Weights, Config], FlaxModel] | None = None,
        backward: str = "auto",
    ):
        import jax

        from jax_impl import convert
        from jax_impl.train import resolve_backward

        self.device = jax.devices("gpu" if device in ("gpu", "cuda") else "cpu")[0]
        self.backward = resolve_backward(backward, self.device)  # the trainer's choice for this device by default
        self.from_canonical = from_canonical or functools.partial(convert.from_canonical, backward=self.backward)
        self.to_canonical: Callable[[FlaxModel], Weights] = convert.to_canonical
        self._chunks: dict[tuple[Any, str], tuple[Any, Any]] = {}  # (graphdef, dtype) -> (optimizer, compiled chunk)

    def _model(self, config: Config, weights: Weights) -> FlaxModel:
        import jax

        from jax_impl.model import enable_dtype

        enable_dtype(config.dtype)
        model: FlaxModel = jax.device_put(self.from_canonical(weights, config), self.device)
        return model

    def _put(self, array: np.ndarray) -> Any:  # a jax.Array on this side's device
        import jax

        return jax.device_put(array, self.device)

    def logits(self, config: Config, weights: Weights, rows: np.ndarray) -> np.ndarray:
        from jax_impl.model import logits_in_batches

        return np.asarray(logits_in_batches(self._model(config, weights), self._put(rows)))

    def hidden_states(self, config: Config, weights: Weights, rows: np.ndarray) -> list[np.ndarray]:
        from flax import nnx

        graphdef, state = nnx.split(self._model(config, weights))
        outputs = _jitted_layer_outputs()(graphdef, state, self._put(rows))
        return [np.asarray(output) for output in outputs]

    def gradients(
        self, config: Config, weights: Weights, rows: np.ndarray, labels: np.ndarray
    ) -> tuple[float, Weights]:
        """Mean cross-entropy and its gradient for every canonical tensor."""
        from jax_impl.train import loss_and_gradients

        model = self._model(config, weights)
        return loss_and_gradients(model, self._put(rows), self._put(labels.astype(np.int32)))

    def train(
        self, config: Config, weights: Weights, rows: np.ndarray, labels: np.ndarray, index_batches: list[np.ndarray]
    ) -> Trajectory:
        """Adam steps with the trainer's own optimizer and compiled chunk (one step per call, to read every step's
        weights). The learning rate is an input of the compiled step, not a constant in it (optax's
        `inject_hyperparams` around the trainer's `make_optimizer`): one compile per model and dtype serves the
        small-lr and the recipe-lr trajectories alike."""
        import optax
        from flax import nnx

        from jax_impl import train as trainer

        # the model is built at one learning rate whatever the run's (the model holds its config, and so its
        # graphdef does; the rate reaches the step as an input): one compile for both trajectories
        graphdef, params = nnx.split(self._model(dataclasses.replace(config, learning_rate=1.0), weights))
        key = (graphdef, config.dtype)
        if key not in self._chunks:  # one compiled train step per model and dtype, whatever the learning rate

            def optimizer_at(learning_rate: Any) -> Any:
                return trainer.make_optimizer(config, learning_rate)

            optimizer = optax.inject_hyperparams(optimizer_at, hyperparam_dtype=np.dtype(config.dtype))(
                learning_rate=config.learning_rate
            )
            self._chunks[key] = (optimizer, trainer.make_train_chunk(graphdef, optimizer))
        optimizer, train_chunk = self._chunks[key]
        opt_state = optimizer.init(params)
        opt_state.hyperparams["learning_rate"] = np.asarray(config.learning_rate, config.dtype)
        # on the device, as the step's outputs are: the second step then runs the first's program, not a new one
        opt_state = self._put(opt_state)
        all_rows, all_labels = self._put(rows), self._put(labels.astype(np.int32))
        losses, after = [], []
        for indices in index_batches:
            batch = self._put(indices[None].astype(np.int32))
            params, opt_state, loss = train_chunk(params, opt_state, all_rows, all_labels, batch)
            losses.append(float(loss[0]))
            after.append(self.to_canonical(nnx.merge(graphdef, params)))
        return Trajectory(np.array(losses), after)


@functools.cache
def _jitted_layer_outputs() -> Callable[..., Any]:
    """`(graphdef, state, rows) -> every layer's output`, compiled; made on first use so that importing
    this module imports no JAX."""
    import jax
    from flax import nnx

    def layer_outputs(graphdef: Any, state: Any, rows: Any) -> Any:
        return nnx.merge(graphdef, state).layer_outputs(rows)

    return jax.jit(layer_outputs, static_argnums=0)
