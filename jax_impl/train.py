"""`python -m jax_impl.train`: train a preset with Flax NNX + optax (Adam, cross-entropy), same files as torch.

The train step is a pure function `(params, opt_state, rows, labels) -> (params, opt_state, loss)`;
`lax.scan` runs a chunk of steps in one compiled call, gathering each batch from the training set that
lives on the device, so the host only sends index batches and reads back losses.
"""

from __future__ import annotations

import sys
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from common.config import Config
from common.data import Dataset, images_to_row_sequences
from common.errors import SeqMnistError
from common.run import EVAL_BATCH, train_main
from common.weights import Weights
from jax_impl.convert import from_canonical, to_canonical
from jax_impl.model import SequenceClassifier, build_model, enable_dtype, logits_in_batches


def resolve_device(requested: str) -> jax.Device:
    """`auto` -> the first GPU when JAX has one, else the CPU; `gpu`/`cuda` without a GPU is an error."""
    if requested in ("auto", "gpu", "cuda"):
        try:
            return jax.devices("gpu")[0]
        except RuntimeError:
            if requested != "auto":
                raise SeqMnistError(f"--device {requested}: JAX sees no GPU (is the CUDA plugin installed?)") from None
    return jax.devices("cpu")[0]


def describe_device(device: jax.Device) -> str:
    return f"{device.platform} ({device.device_kind})"


def loss_fn(model: SequenceClassifier, rows: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy over the batch (PyTorch's `cross_entropy` with mean reduction)."""
    return optax.softmax_cross_entropy_with_integer_labels(model(rows), labels).mean()


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """optax Adam with PyTorch's defaults (b1 0.9, b2 0.999, eps 1e-8) at the recipe's learning rate."""
    return optax.adam(config.learning_rate, b1=0.9, b2=0.999, eps=1e-8)


def make_train_chunk(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation):
    """A jitted `(params, opt_state, all_rows, all_labels, index_batches) -> (params, opt_state, losses)`."""

    @jax.jit
    def train_chunk(params, opt_state, all_rows, all_labels, index_batches):
        def train_step(state, indices):
            params, opt_state = state
            rows, labels = all_rows[indices], all_labels[indices]
            loss, grads = jax.value_and_grad(lambda p: loss_fn(nnx.merge(graphdef, p), rows, labels))(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(train_step, (params, opt_state), index_batches)
        return params, opt_state, losses

    return train_chunk


class JaxTrainer:
    """Parameters, optax Adam state and the whole dataset on one device; compiled chunks of steps.

    Chunks of `chunk_steps` full batches run as one scan; shorter remainders run one step per call, so
    at most three shapes are compiled (each ahead of its first use, timed apart as `compile_seconds`).
    """

    def __init__(self, config: Config, weights: Weights | None, dataset: Dataset, device: str,
                 chunk_steps: int = 50):
        enable_dtype(config.dtype)
        self.jax_device = resolve_device(device)
        self.device = describe_device(self.jax_device)
        self.config, self.chunk_steps = config, chunk_steps
        model = build_model(config, native_seed=config.seed) if weights is None else from_canonical(weights, config)
        self.graphdef, params = nnx.split(model)
        self.optimizer = make_optimizer(config)
        put = lambda value: jax.device_put(value, self.jax_device)  # noqa: E731
        self.params = put(params)
        self.opt_state = put(self.optimizer.init(self.params))
        self.train_rows = put(images_to_row_sequences(dataset.train_images, config.dtype))
        self.train_labels = put(dataset.train_labels.astype(np.int32))
        self.test_rows = put(images_to_row_sequences(dataset.test_images, config.dtype))
        self.train_chunk = make_train_chunk(self.graphdef, self.optimizer)
        self.compiled: dict[tuple[int, int], jax.stages.Compiled] = {}
        self.compile_seconds = 0.0

    def compiled_chunk(self, shape: tuple[int, int]) -> jax.stages.Compiled:
        """The train chunk compiled for `[steps, batch]` index arrays; compile time adds to compile_seconds."""
        if shape not in self.compiled:
            began = time.perf_counter()
            self.compiled[shape] = self.train_chunk.lower(
                self.params, self.opt_state, self.train_rows, self.train_labels,
                jax.ShapeDtypeStruct(shape, jnp.int32)).compile()
            self.compile_seconds += time.perf_counter() - began
        return self.compiled[shape]

    def train_steps(self, index_batches: Sequence[np.ndarray]) -> np.ndarray:
        losses, position = [], 0
        while position < len(index_batches):
            width = len(index_batches[position])
            run = self.chunk_steps if self._full_chunk_at(index_batches, position) else 1
            indices = np.stack(index_batches[position : position + run]).astype(np.int32)
            step = self.compiled_chunk((run, width))
            self.params, self.opt_state, chunk_losses = step(
                self.params, self.opt_state, self.train_rows, self.train_labels, jax.device_put(indices, self.jax_device))
            losses.append(chunk_losses)
            position += run
        return np.concatenate([np.asarray(loss) for loss in losses])

    def _full_chunk_at(self, index_batches: Sequence[np.ndarray], position: int) -> bool:
        window = index_batches[position : position + self.chunk_steps]
        return len(window) == self.chunk_steps and all(len(batch) == self.config.batch_size for batch in window)

    def model(self) -> SequenceClassifier:
        return nnx.merge(self.graphdef, self.params)

    def test_logits(self, count: int) -> np.ndarray:
        return np.asarray(logits_in_batches(self.model(), self.test_rows[:count], EVAL_BATCH))

    def canonical_weights(self) -> Weights:
        return to_canonical(self.model())

    def peak_device_mb(self) -> float | None:
        """Peak bytes in use on the accelerator, when its client reports it (None on the CPU)."""
        if self.jax_device.platform == "cpu":
            return None
        stats = self.jax_device.memory_stats() or {}
        return stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None

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
            weights = {name[len(prefix):]: array for name, array in state.items() if name.startswith(prefix)}
            return jax.device_put(nnx.split(from_canonical(weights, self.config))[1], self.jax_device)

        adam = self.opt_state[0]._replace(count=jnp.asarray(int(state["adam.step"][0]), dtype=jnp.int32),
                                          mu=moments("exp_avg"), nu=moments("exp_avg_sq"))
        self.opt_state = (adam, *self.opt_state[1:])


def versions() -> dict:
    import flax  # noqa: PLC0415

    return {"jax": jax.__version__, "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
            "flax": flax.__version__, "optax": optax.__version__}


def main(argv: Sequence[str] | None = None) -> int:
    return train_main(argv, framework="jax", make_trainer=JaxTrainer, versions=versions)


if __name__ == "__main__":
    sys.exit(main())
