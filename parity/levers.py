"""The speed levers `python -m parity.bench --levers` measures beside the trainers' defaults.

Each lever is the project trainer with one thing changed, timed round-robin with the others in one process
(so that machine noise hits all alike). The trainers keep the levers that paid (fused Adam); the README's
Performance section gives every lever's measured figure, the ones that did not pay included.

A lever may change the summation order of a computation, never its math: the hoisted projection computes
`(x W_i + b_i) + (h W_h + b_h)` exactly as `OptimizedLSTMCell` does, only with all time steps' `x W_i` in
one matmul before the recurrence.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from common.config import Config
from common.data import Dataset
from common.weights import initial_weights

# lever name -> what it changes (printed under the table)
LEVERS = {
    "torch: Adam for-loop": "torch.optim.Adam(foreach=False): one update per parameter (the tutorials' Adam on CPU)",
    "torch: Adam foreach": "torch.optim.Adam(foreach=True): multi-tensor update",
    "torch: 1 thread": "torch.set_num_threads(1) around the timed steps (default: one per core)",
    "torch: torch.compile": "torch.compile(model.forward) (inductor), fused Adam",
    "torch: flush denormals": "torch.set_flush_denormal(True) around the timed steps (subnormal floats read as 0)",
    "jax: chunk 25": "25 train steps per compiled lax.scan call (default 50)",
    "jax: chunk 200": "200 train steps per compiled lax.scan call (default 50)",
    "jax: unroll 2": "nnx.RNN(unroll=2): two time steps per iteration of the time scan",
    "jax: hoisted input projection": "x W_i + b_i for all 28 rows in one matmul, only h W_h + b_h in the time scan",
    "jax: both directions in one scan": "a bidirectional layer's two directions stepped in one lax.scan (two dots "
                                        "per step); other layers as default",
    "jax: 2 CPU devices": "jax_num_cpu_devices=2, each batch split over two devices (GSPMD data parallel)",
}


def torch_lever(name: str, trainer) -> Callable[[Callable[[], float]], float]:
    """Change `trainer` for the lever; return how to call its timed run (a wrapper for thread settings)."""
    import torch  # noqa: PLC0415

    config = trainer.config
    if name.startswith("torch: Adam"):
        foreach = name.endswith("foreach")
        trainer.optimizer = torch.optim.Adam(trainer.model.parameters(), lr=config.learning_rate, foreach=foreach)
    elif name == "torch: torch.compile":
        trainer.model.forward = torch.compile(trainer.model.forward)
    elif name == "torch: 1 thread":
        return around(lambda: torch.set_num_threads(1), torch.set_num_threads, torch.get_num_threads())
    elif name == "torch: flush denormals":
        return around(lambda: torch.set_flush_denormal(True), lambda _: torch.set_flush_denormal(False), None)
    return lambda run: run()


def around(switch_on: Callable[[], object], restore: Callable[[object], object], saved: object):
    """A wrapper that runs the timed steps with a process-wide setting switched on, restoring it after."""
    def wrapped(run: Callable[[], float]) -> float:
        switch_on()
        try:
            return run()
        finally:
            restore(saved)

    return wrapped


def recurrence_step(config: Config, cell):
    """`(carry, x W_i + b_i) -> (carry, h)`: one time step of `cell` given its input projection."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    def lstm_step(carry, x_part):
        c, h = carry
        i, f, g, o = jnp.split(x_part + cell.dense_h(h), 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (c, h), h

    def rnn_step(h, x_part):
        h = jnp.tanh(x_part + cell.dense_h(h))
        return h, h

    if config.cell not in ("lstm", "rnn"):
        raise ValueError(f"the scan levers cover the lstm and rnn cells, got {config.cell!r}")
    return lstm_step if config.cell == "lstm" else rnn_step


def hoisted_layer_outputs(model, rows):
    """`SequenceClassifier.layer_outputs` with each layer's input projection taken out of the time scan."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from jax_impl.model import zero_carry  # noqa: PLC0415

    config = model.config

    def direction(cell, sequence, reverse: bool):
        projected = jnp.swapaxes(cell.dense_i(sequence), 0, 1)  # [time, batch, gates * hidden]
        carry = zero_carry(config, sequence.shape[0])
        _, outputs = jax.lax.scan(recurrence_step(config, cell), carry, projected, reverse=reverse)
        return jnp.swapaxes(outputs, 0, 1)

    outputs, sequence = [], rows
    for layer in model.layers:
        if config.bidirectional:
            sequence = jnp.concatenate([direction(layer.forward_rnn.cell, sequence, False),
                                        direction(layer.backward_rnn.cell, sequence, True)], axis=-1)
        else:
            sequence = direction(layer.cell, sequence, False)
        outputs.append(sequence)
    return outputs


def fused_directions_layer_outputs(model, rows):
    """`SequenceClassifier.layer_outputs` with both directions of a bidirectional layer in one time scan.

    Scan step s feeds row s to the forward cell and row T-1-s to the backward cell; the backward outputs are
    then put back in row order, so position t holds its state after rows T-1..t (PyTorch's convention).
    """
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from jax_impl.model import zero_carry  # noqa: PLC0415

    config = model.config
    outputs, sequence = [], rows
    for layer in model.layers:
        if not config.bidirectional:
            sequence = layer(sequence, initial_carry=zero_carry(config, rows.shape[0]))
            outputs.append(sequence)
            continue
        forward, backward = layer.forward_rnn.cell, layer.backward_rnn.cell
        forward_step, backward_step = recurrence_step(config, forward), recurrence_step(config, backward)

        def both(carry, rows_pair, forward=forward, backward=backward, forward_step=forward_step,
                 backward_step=backward_step):
            forward_carry, forward_h = forward_step(carry[0], forward.dense_i(rows_pair[0]))
            backward_carry, backward_h = backward_step(carry[1], backward.dense_i(rows_pair[1]))
            return (forward_carry, backward_carry), (forward_h, backward_h)

        time_major = jnp.swapaxes(sequence, 0, 1)  # [time, batch, features]
        zeros = zero_carry(config, rows.shape[0])
        _, (forward_h, backward_h) = jax.lax.scan(both, (zeros, zeros), (time_major, time_major[::-1]))
        sequence = jnp.swapaxes(jnp.concatenate([forward_h, backward_h[::-1]], axis=-1), 0, 1)
        outputs.append(sequence)
    return outputs


LAYER_OUTPUTS_LEVERS = {
    "jax: hoisted input projection": hoisted_layer_outputs,
    "jax: both directions in one scan": fused_directions_layer_outputs,
}


def with_layer_outputs(model, name: str):
    """`model`, its class swapped for one whose `layer_outputs` is the lever's (same parameters, same tree)."""
    from jax_impl import model as jax_model  # noqa: PLC0415

    class Levered(jax_model.SequenceClassifier):
        layer_outputs = LAYER_OUTPUTS_LEVERS[name]

    model.__class__ = Levered
    return model


def jax_trainer_for_lever(name: str, config: Config, dataset: Dataset, device: str):
    """A JaxTrainer changed for the lever."""
    from flax import nnx  # noqa: PLC0415

    from jax_impl.train import JaxTrainer, make_train_chunk  # noqa: PLC0415

    chunk = int(name.split()[-1]) if name.startswith("jax: chunk") else 50
    trainer = JaxTrainer(config, initial_weights(config), dataset, device, chunk_steps=chunk)
    if name == "jax: unroll 2" or name in LAYER_OUTPUTS_LEVERS:
        model = trainer.model()
        if name == "jax: unroll 2":
            for path, module in nnx.iter_graph(model):
                if isinstance(module, nnx.RNN):
                    module.unroll = 2
        else:
            with_layer_outputs(model, name)
        trainer.graphdef, trainer.params = nnx.split(model)
        trainer.train_chunk = make_train_chunk(trainer.graphdef, trainer.optimizer)
    if name == "jax: 2 CPU devices":
        data_parallel(trainer)
    return trainer


def data_parallel(trainer) -> None:
    """Replicate parameters and data over every CPU device and split each batch between them."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    from jax.sharding import NamedSharding, PartitionSpec  # noqa: PLC0415

    devices = jax.devices("cpu")
    if len(devices) < 2:
        raise RuntimeError("the 2-device lever needs jax_num_cpu_devices=2 set before JAX starts")
    mesh = jax.make_mesh((len(devices),), ("data",), devices=devices, axis_types=(jax.sharding.AxisType.Auto,))
    replicated, split = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec(None, "data"))
    for attribute in ("params", "opt_state", "train_rows", "train_labels", "test_rows"):
        setattr(trainer, attribute, jax.device_put(getattr(trainer, attribute), replicated))

    def compiled_chunk(shape):
        if shape not in trainer.compiled:
            import time  # noqa: PLC0415

            began = time.perf_counter()
            trainer.compiled[shape] = trainer.train_chunk.lower(
                trainer.params, trainer.opt_state, trainer.train_rows, trainer.train_labels,
                jax.ShapeDtypeStruct(shape, jnp.int32, sharding=split)).compile()
            trainer.compile_seconds += time.perf_counter() - began
        return trainer.compiled[shape]

    def train_steps(index_batches):
        losses = []
        for start in range(0, len(index_batches), trainer.chunk_steps):
            indices = np.stack(index_batches[start : start + trainer.chunk_steps]).astype(np.int32)
            step = compiled_chunk(indices.shape)
            trainer.params, trainer.opt_state, chunk_losses = step(
                trainer.params, trainer.opt_state, trainer.train_rows, trainer.train_labels,
                jax.device_put(indices, split))
            losses.append(chunk_losses)
        return np.concatenate([np.asarray(loss) for loss in losses])

    trainer.train_steps = train_steps
