"""The Flax NNX side of a port check: the model built holding given weights, run in float32 or float64.

The mirror of `torch_runner`: outputs, each declared submodule's outputs, the loss gradients and a run of
optax steps, as NumPy arrays keyed by Flax path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from parity.compare import Weights
from parity.port import transforms
from parity.port.declare import Entry, Port, unknown_name
from parity.port.optimizer import Optimizer
from parity.port.torch_runner import first_tensor
from parity.port.weights import build, flax_shapes, load_flax, path_name, to_flax


def enable_float64() -> None:
    """JAX computes in float64 only with x64 switched on (once per process, before any array is made)."""
    import jax

    jax.config.update("jax_enable_x64", True)  # type: ignore[no-untyped-call]


def flax_model_holding(port: Port, entries: list[Entry], weights: Weights, dtype: str) -> Any:
    """The port's Flax model in `dtype`, holding `weights` (PyTorch layout, converted through the table), in
    eval mode."""
    model: Any = build(port.flax_model, dtype)
    load_flax(model, to_flax(entries, weights, flax_shapes(model)))
    model.eval()
    return model


def flax_input(port: Port, inputs: np.ndarray) -> np.ndarray:
    """A PyTorch-layout input turned into the Flax model's, through the port's `inputs` steps."""
    return transforms.apply(port.inputs, [inputs], [])[0]


def flax_forward(port: Port, model: Any, inputs: np.ndarray) -> np.ndarray:
    import jax.numpy as jnp

    return np.asarray(first_tensor(model(jnp.asarray(flax_input(port, inputs)))))


def flax_submodule_outputs(port: Port, model: Any, inputs: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Flax module path -> the outputs of its `__call__`, in call order.

    Only the declared modules are recorded, by identity: each one's class gets a recording `__call__` for
    the length of one eager forward pass. (`nnx.capture(method_outputs=...)` records every module, and a
    module called inside `nnx.scan`, such as a recurrent cell, then breaks the scan's carry.) A declared
    module that runs only inside a JAX transform is a copy there, so it records nothing.
    """
    import jax.numpy as jnp
    from flax import nnx

    modules = {path_name(path): module for path, module in nnx.iter_modules(model)}
    wanted: dict[int, str] = {}
    for entry in port.submodule_entries:
        if entry.flax[0] not in modules:
            raise unknown_name("submodules: the Flax module", entry.flax[0], [n for n in modules if n])
        wanted[id(modules[entry.flax[0]])] = entry.flax[0]
    outputs: dict[str, list[np.ndarray]] = {}
    with recording_calls({type(modules[path]) for path in wanted.values()}, wanted, outputs):
        model(jnp.asarray(flax_input(port, inputs)))
    return outputs


@contextlib.contextmanager
def recording_calls(classes: set[type], wanted: dict[int, str], outputs: dict[str, list[np.ndarray]]) -> Iterator[None]:
    """Within the block, a call of any instance in `wanted` (by id) appends its output to outputs[its name]."""
    patched = []
    for cls in classes:
        original = cls.__call__

        def recorder(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            output = __original(self, *args, **kwargs)
            name = wanted.get(id(self))
            if name is not None:
                outputs.setdefault(name, []).append(np.asarray(first_tensor(output)))
            return output

        patched.append((cls, "__call__" in cls.__dict__, original))
        setattr(cls, "__call__", recorder)  # noqa: B010 (mypy refuses assigning to a method)
    try:
        yield
    finally:
        for cls, own, original in patched:
            if own:
                setattr(cls, "__call__", original)  # noqa: B010
            else:
                delattr(cls, "__call__")


def split_params(model: Any) -> tuple[Any, Any, Any]:
    """(graphdef, the nnx.Param state, the rest of the state)."""
    from flax import nnx

    graphdef, params, *rest = nnx.split(model, nnx.Param, ...)
    return graphdef, params, rest[0]


def flax_value_and_grad(port: Port, graphdef: Any) -> Any:
    """`(params, rest, inputs, labels) -> (loss, gradients)` for the model's structure."""
    import jax
    from flax import nnx

    def loss(params: Any, rest: Any, inputs: Any, labels: Any) -> Any:
        return port.flax_loss(nnx.merge(graphdef, params, rest)(inputs), labels)

    return jax.value_and_grad(loss)


def by_path(state: Any) -> Weights:
    """An nnx.State as NumPy arrays (copies) by Flax path."""
    from flax import nnx

    return {path_name(p): np.array(v.get_value()) for p, v in nnx.to_flat_state(state)}


def flax_gradients(port: Port, model: Any, inputs: np.ndarray, labels: np.ndarray) -> tuple[float, Weights]:
    """The loss and its gradient for every Flax parameter, by path."""
    import jax
    import jax.numpy as jnp

    graphdef, params, rest = split_params(model)
    value_and_grad = jax.jit(flax_value_and_grad(port, graphdef))
    loss, grads = value_and_grad(params, rest, jnp.asarray(flax_input(port, inputs)), labels)
    return float(loss), by_path(grads)


def flax_steps(
    port: Port, model: Any, optimizer: Optimizer, inputs: np.ndarray, labels: np.ndarray, batches: list[np.ndarray]
) -> Iterator[tuple[float, Weights]]:
    """optax's optimizer, one jitted step per batch: yields each step's loss and the weights after it
    (parameters and optimizer state are donated to the step: a large model is held once, not twice)."""
    import functools

    import jax
    import jax.numpy as jnp
    import optax

    transformation = optimizer.optax()
    graphdef, params, rest = split_params(model)
    del model
    value_and_grad = flax_value_and_grad(port, graphdef)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params: Any, state: Any, x: Any, y: Any) -> Any:
        loss, grads = value_and_grad(params, rest, x, y)
        updates, state = transformation.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    state = transformation.init(params)
    rows = jnp.asarray(flax_input(port, inputs))
    for batch in batches:
        params, state, loss = step(params, state, rows[batch], jnp.asarray(labels[batch]))
        yield float(loss), by_path(params)
