"""`python -m jax_impl.train`: train a preset with Flax NNX + optax (Adam, cross-entropy), same files as torch.

`train_step(graphdef, optimizer, params, opt_state, rows, labels) -> (params, opt_state, loss)` is pure;
`make_train_chunk` runs a chunk of them in one compiled `lax.scan`, gathering each batch from the training
set that lives on the device, so the host only sends index batches and reads back losses.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from common.commands import train_main
from common.config import Config
from common.data import Dataset, images_to_row_sequences
from common.errors import ConfigError
from common.outputs import entry_point
from common.trainer import EVAL_BATCH
from common.weights import Weights
from jax_impl.cache import enable_compilation_cache
from jax_impl.convert import from_canonical, to_canonical
from jax_impl.device import describe_device, peak_memory_mb, resolve_device
from jax_impl.model import SequenceClassifier, build_model, enable_dtype, logits_in_batches


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """How the JAX trainer computes, never what: the speed levers `python -m bench --levers` compares."""

    chunk_steps: int = 50  # training steps per compiled lax.scan call
    recurrence: str = "flax"  # how the time loop is scheduled: jax_impl.model.RECURRENCES
    unroll: int = 1  # time steps per iteration of the time scan
    cpu_devices: int = 1  # >1: each batch split over this many CPU devices (jax_num_cpu_devices set first)
    compiler_options: tuple[tuple[str, str], ...] = ()  # XLA options for compiling the train chunk (XNN/YNN fusion)
    backward: str = "auto"  # the recurrence's gradient: autodiff, manual (jax_impl/backward.py), auto: resolve_backward


def resolve_backward(backward: str, device: jax.Device, recurrence: str = "flax") -> str:
    """`auto` -> the measured faster gradient: the hand-written one on a CPU, autodiff on a GPU (where the
    choice waits for its measurement; docs/performance.md) or beside another `recurrence` schedule."""
    if backward != "auto":
        return backward
    return "manual" if device.platform == "cpu" and recurrence == "flax" else "autodiff"


def loss_fn(model: SequenceClassifier, rows: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy over the batch (PyTorch's `cross_entropy` with mean reduction)."""
    return optax.softmax_cross_entropy_with_integer_labels(model.logits(rows), labels).mean()


def make_optimizer(config: Config, learning_rate=None) -> optax.GradientTransformation:
    """optax Adam with PyTorch's defaults (b1 0.9, b2 0.999, eps 1e-8) at the recipe's learning rate, or at
    `learning_rate` (a value `optax.inject_hyperparams` passes in, for one compiled step at any rate)."""
    return optax.adam(config.learning_rate if learning_rate is None else learning_rate, b1=0.9, b2=0.999, eps=1e-8)


def value_and_grad(graphdef: nnx.GraphDef, params, rows: jax.Array, labels: jax.Array):
    """`(loss, gradients)` of the batch's mean cross-entropy with respect to `params` (a pytree like them)."""
    return jax.value_and_grad(lambda p: loss_fn(nnx.merge(graphdef, p), rows, labels))(params)


_compiled_value_and_grad = jax.jit(value_and_grad, static_argnums=0)


def train_step(
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    params,
    opt_state,
    rows: jax.Array,
    labels: jax.Array,
):
    """One Adam step on the batch's mean cross-entropy: `(params, opt_state, loss before the step)`."""
    loss, grads = value_and_grad(graphdef, params, rows, labels)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def loss_and_gradients(model: SequenceClassifier, rows: jax.Array, labels: jax.Array) -> tuple[float, Weights]:
    """The batch's mean cross-entropy and its gradient for every parameter, under canonical names."""
    graphdef, params = nnx.split(model)
    loss, grads = _compiled_value_and_grad(graphdef, params, rows, labels)
    return float(loss), to_canonical(nnx.merge(graphdef, grads))


def make_train_chunk(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation):
    """A jitted `(params, opt_state, all_rows, all_labels, index_batches) -> (params, opt_state, losses)`."""

    @jax.jit
    def train_chunk(params, opt_state, all_rows, all_labels, index_batches):
        def step(state, indices):
            params, opt_state = state
            params, opt_state, loss = train_step(
                graphdef, optimizer, params, opt_state, all_rows[indices], all_labels[indices]
            )
            return (params, opt_state), loss

        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), index_batches)
        return params, opt_state, losses

    return train_chunk


def placements(device: jax.Device, cpu_devices: int):
    """(where parameters and data go, where index batches go): one device, or replicated / split over a mesh."""
    if cpu_devices == 1:
        return device, device
    devices = jax.devices("cpu")
    if device.platform != "cpu" or len(devices) < cpu_devices:
        raise ConfigError(
            f"cpu_devices={cpu_devices} needs jax_num_cpu_devices >= {cpu_devices} set before "
            f"JAX starts (it sees {len(devices)} CPU devices, and the run is on {device.platform})"
        )
    mesh = jax.make_mesh(
        (cpu_devices,), ("data",), devices=devices[:cpu_devices], axis_types=(jax.sharding.AxisType.Auto,)
    )
    return NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec(None, "data"))


class JaxTrainer:
    """Parameters, optax Adam state and the whole dataset on one device; compiled chunks of steps.

    Chunks of `chunk_steps` full batches run as one scan; shorter remainders run one step per call, so
    at most three shapes are compiled (each ahead of its first use, timed apart as `compile_seconds`).
    """

    def __init__(
        self,
        config: Config,
        weights: Weights | None,
        dataset: Dataset,
        device: str,
        options: TrainOptions = TrainOptions(),
    ):
        enable_dtype(config.dtype)
        self.jax_device = resolve_device(device)
        self.device = describe_device(self.jax_device)
        self.config, self.options = config, options
        model_options: dict[str, Any] = {
            "recurrence": options.recurrence,
            "unroll": options.unroll,
            "backward": resolve_backward(options.backward, self.jax_device, options.recurrence),
        }
        model = (
            build_model(config, native_seed=config.seed, **model_options)
            if weights is None
            else from_canonical(weights, config, **model_options)
        )
        self.graphdef, params = nnx.split(model)
        # evaluation: the same parameters in autodiff's model, whose step takes one product for all the gates
        # (the hand-written backward's forward takes one per gate, which pays only in training; the two
        # models hold the same state, so the one merges into the other; its graph alone, built abstractly:
        # a concrete build would run, and compile, every initialiser op eagerly for values never used)
        evaluated = {**model_options, "backward": "autodiff"}
        self.eval_graphdef = (
            self.graphdef
            if evaluated == model_options
            else nnx.split(nnx.eval_shape(lambda: build_model(config, **evaluated)))[0]
        )
        self.optimizer = make_optimizer(config)
        self.placement, self.index_placement = placements(self.jax_device, options.cpu_devices)

        def put(value):
            return jax.device_put(value, self.placement)

        self.params = put(params)
        self.opt_state = put(jax.jit(self.optimizer.init)(self.params))  # one program, not an op per shape
        self.train_rows = put(images_to_row_sequences(dataset.train_images, config.dtype))
        self.train_labels = put(dataset.train_labels.astype(np.int32))
        self.test_rows = put(images_to_row_sequences(dataset.test_images, config.dtype))
        self.train_chunk = make_train_chunk(self.graphdef, self.optimizer)
        self.compiled: dict[tuple[int, int], jax.stages.Compiled] = {}
        self.compile_seconds = 0.0

    def _compiled_chunk(self, shape: tuple[int, int]) -> jax.stages.Compiled:
        """The train chunk compiled for `[steps, batch]` index arrays; compile time adds to compile_seconds."""
        if shape not in self.compiled:
            # finish the steps already dispatched first: compiling beside them would hide their time in
            # compile_seconds, which the loop subtracts from the training time
            jax.block_until_ready((self.params, self.opt_state))
            began = time.perf_counter()
            sharding = None if self.options.cpu_devices == 1 else self.index_placement
            self.compiled[shape] = self.train_chunk.lower(
                self.params,
                self.opt_state,
                self.train_rows,
                self.train_labels,
                jax.ShapeDtypeStruct(shape, jnp.int32, sharding=sharding),
            ).compile(dict(self.options.compiler_options) or None)
            self.compile_seconds += time.perf_counter() - began
        return self.compiled[shape]

    def train_steps(self, index_batches: Sequence[np.ndarray]) -> np.ndarray:
        losses, position = [], 0
        while position < len(index_batches):
            width = len(index_batches[position])
            run = self.options.chunk_steps if self._full_chunk_at(index_batches, position) else 1
            indices = np.stack(index_batches[position : position + run]).astype(np.int32)
            step = self._compiled_chunk((run, width))
            self.params, self.opt_state, chunk_losses = step(
                self.params,
                self.opt_state,
                self.train_rows,
                self.train_labels,
                jax.device_put(indices, self.index_placement),
            )
            losses.append(chunk_losses)
            position += run
        return np.concatenate([np.asarray(loss) for loss in losses])

    def _full_chunk_at(self, index_batches: Sequence[np.ndarray], position: int) -> bool:
        window = index_batches[position : position + self.options.chunk_steps]
        return len(window) == self.options.chunk_steps and all(len(batch) == self.config.batch_size for batch in window)

    @property
    def model(self) -> SequenceClassifier:
        """A model holding the current parameters."""
        return nnx.merge(self.graphdef, self.params)

    def test_logits(self, count: int) -> np.ndarray:
        evaluated = nnx.merge(self.eval_graphdef, self.params)
        return np.asarray(logits_in_batches(evaluated, self.test_rows[:count], EVAL_BATCH))

    def canonical_weights(self) -> Weights:
        return to_canonical(self.model)

    def peak_device_mb(self) -> float | None:
        return peak_memory_mb(self.jax_device)

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """optax Adam's moments (`mu`, `nu`) under canonical names, and its step count."""
        adam = self.opt_state[0]
        state = {"adam.step": np.array([int(adam.count)], dtype=np.int64)}
        for key, moments in (("exp_avg", adam.mu), ("exp_avg_sq", adam.nu)):
            for name, array in to_canonical(nnx.merge(self.graphdef, moments)).items():
                state[f"adam.{key}.{name}"] = array
        return state

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        def moments(key: str):
            prefix = f"adam.{key}."
            weights = {name[len(prefix) :]: array for name, array in state.items() if name.startswith(prefix)}
            return jax.device_put(nnx.split(from_canonical(weights, self.config))[1], self.placement)

        adam = self.opt_state[0]._replace(
            count=jax.device_put(np.int32(state["adam.step"][0]), self.placement),
            mu=moments("exp_avg"),
            nu=moments("exp_avg_sq"),
        )
        self.opt_state = (adam, *self.opt_state[1:])


def versions() -> dict[str, str | int | None]:
    import flax

    return {
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
        "flax": flax.__version__,
        "optax": optax.__version__,
    }


def main(argv: Sequence[str] | None = None) -> int:
    enable_compilation_cache()  # before the first compile: JAX's programs kept on disk (jax_impl/cache.py)
    return train_main(argv, framework="jax", make_trainer=JaxTrainer, versions=versions)


if __name__ == "__main__":
    sys.exit(entry_point(main))
