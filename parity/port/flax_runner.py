"""The Flax NNX side of a port check: the model built holding given weights, run in float32 or float64.

The mirror of `torch_runner`: the loss gradients and a run of optax steps, as NumPy arrays keyed by Flax path;
the forward passes (outputs, each declared submodule's outputs) are `parity.port.flax_passes`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ParamSpec, TypeVar

import numpy as np

from parity.compare import Weights
from parity.port.building import built_to_fill
from parity.port.declare import Entry, Port, PortError
from parity.port.flax_passes import flax_inputs, iter_modules
from parity.port.optimizer import Optimizer
from parity.port.scope import kept
from parity.port.trees import called, path_name, take, to_jax
from parity.port.weights import Widening, load_flax_entries

P = ParamSpec("P")
R = TypeVar("R")


def x64(dtype: str) -> contextlib.AbstractContextManager[Any]:
    """JAX's x64 switched on for a float64 run only, as a context (`jax.enable_x64`): the float32 run, and the
    user's code after the check, see JAX as the user set it (a port mixing int32 and int64 indices runs there
    as it does for its users)."""
    import jax

    return jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()


def on_device(device: str) -> contextlib.AbstractContextManager[Any]:
    """JAX's default device for a run on `device` ("cpu", or "gpu": the first GPU), as a context: the Flax
    model is built there, and its inputs are put there."""
    import jax

    context: contextlib.AbstractContextManager[Any] = jax.default_device(
        jax.devices("gpu" if device == "gpu" else "cpu")[0]
    )
    return context


def in_x64(function: Callable[P, R]) -> Callable[P, R]:
    """`function` run with JAX's x64 on (`x64("float64")`): a float64 check of its own."""

    @functools.wraps(function)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        with x64("float64"):
            return function(*args, **kwargs)

    return wrapped


def flax_model_holding(
    port: Port, entries: list[Entry], weights: Mapping[str, np.ndarray], dtype: str, mode: str = "eval"
) -> Any:
    """The port's Flax model for a `dtype` run (a factory taking `dtype` is given it), holding `weights` (PyTorch
    layout, converted through the table), in `mode` ("eval" or "train"). A streaming float64 run passes float32
    weights `Widening` to float64: each entry is converted in float64 and kept in float32 where that is exact
    (a summed bias is not), and NNX's layers promote float32 weights against float64 inputs."""
    model: Any = built_to_fill(port.flax_model, dtype, {path for entry in entries for path in entry.flax})
    if dtype == "float64":
        fixed = [
            f"{path} ({type(m).__name__})"
            for path, m in iter_modules(model)
            if str(getattr(m, "dtype", "")) == "float32"
        ]
        if fixed:
            raise PortError(
                f"{port.name}: the Flax model computes in float32 with float64 weights and inputs: "
                f"{', '.join(fixed[:4])}{', ...' if len(fixed) > 4 else ''} fixed dtype float32 at build; leave "
                "their dtype unset (None), and build an nnx.Embed with param_dtype=dtype (it takes its dtype from its "
                "parameters at build): a flax_model factory taking `dtype` is given the run's"
            )
    load_flax_entries(model, entries, weights, narrow=isinstance(weights, Widening))
    model.train() if mode == "train" else model.eval()
    return model


def split_params(model: Any) -> tuple[Any, Any, Any]:
    """(graphdef, the nnx.Param state, the rest of the state)."""
    from flax import nnx

    graphdef, params, *rest = nnx.split(model, nnx.Param, ...)
    return graphdef, params, rest[0]


def flax_value_and_grad(port: Port, graphdef: Any) -> Any:
    """`(params, rest, inputs, labels) -> ((loss, rest after the forward), gradients)` for the model's structure,
    compiled (in train mode the forward updates the batch statistics in `rest`). `nnx.value_and_grad` on the
    merged model, not `jax.value_and_grad` on its state: a module holding an RNG stream (`nnx.RNN`'s) advances
    it in the forward pass, which only NNX's own transform allows. One program object per (way of calling,
    loss, structure): the gradients check and the trajectory's steps on a batch of as many rows share one trace
    and one compilation, for the rest of the check (`scope.kept`)."""
    key = ("gradient", port.flax_forward, port.flax_loss, graphdef)
    return kept(key, lambda: _gradient_program(port.flax_forward, port.flax_loss, graphdef))


def _gradient_program(forward: Callable[..., Any] | None, loss: Callable[..., Any], graphdef: Any) -> Any:
    import jax
    from flax import nnx

    def value_and_grad(params: Any, rest: Any, inputs: Any, labels: Any) -> Any:
        model = nnx.merge(graphdef, params, rest)
        value, grads = nnx.value_and_grad(lambda model: loss(called(forward, model, *inputs), labels))(model)
        return (value, nnx.state(model, nnx.Not(nnx.Param))), grads

    return jax.jit(value_and_grad)


def by_path(state: Any) -> Weights:
    """An nnx.State as NumPy arrays (copies) by Flax path."""
    from flax import nnx

    return {path_name(p): np.array(v.get_value()) for p, v in nnx.to_flat_state(state)}


def flax_gradients(port: Port, model: Any, inputs: tuple[np.ndarray, ...], labels: np.ndarray) -> tuple[float, Weights]:
    """The loss and its gradient for every Flax parameter, by path."""
    graphdef, params, rest = split_params(model)
    (loss, _), grads = flax_value_and_grad(port, graphdef)(params, rest, flax_inputs(port, inputs), labels)
    return float(loss), by_path(grads)


def flax_steps(
    port: Port,
    model: Any,
    optimizer: Optimizer,
    inputs: tuple[np.ndarray, ...],
    labels: np.ndarray,
    batches: list[np.ndarray],
    mapped: set[str],
) -> Iterator[tuple[float, Weights]]:
    """optax's optimizer, one step per batch (taken from the inputs put on the device once): yields each step's
    loss and the `mapped` variables after it (parameters; batch statistics carried from step to step). A step is
    the gradients check's compiled program (`flax_value_and_grad`: compiled once for a batch of as many rows as
    that check's inputs), then a compiled update, parameters and optimizer state donated (a large model held once).
    A port's own `flax_step` takes each step where it declares one (a trainer's step, compiled as it is)."""
    import jax
    import optax
    from flax import nnx

    transformation, (graphdef, params, rest) = optimizer.optax(), split_params(model)
    del model
    init = jax.jit(transformation.init)  # one program, not a zeros op per parameter shape
    arrays, targets = flax_inputs(port, inputs), to_jax(labels)  # on the device once; each batch taken there
    if (flax_step := port.flax_step) is not None:  # the port's own step: on a model whose state is all parameters
        if held := list(by_path(rest)):
            raise PortError(f"{port.name}: flax_step takes a model of parameters alone; this one holds {held[0]}")
        own, params = nnx.split(nnx.merge(graphdef, params, rest))  # the graphdef of the parameters alone

        @functools.partial(jax.jit, donate_argnums=(0, 1))
        def own_step(params: Any, state: Any, arrays: Any, targets: Any, batch: Any) -> Any:
            return flax_step(own, transformation, params, state, *take(arrays, batch), targets[batch])

        state = init(params)
        for batch in batches:
            params, state, loss = own_step(params, state, arrays, targets, to_jax(batch))
            yield float(loss), by_path(params)
        return

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def update(params: Any, state: Any, grads: Any) -> Any:
        updates, state = transformation.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    gradient, state = flax_value_and_grad(port, graphdef), init(params)
    pick = jax.jit(lambda arrays, targets, batch: (take(arrays, batch), targets[batch]))  # one small program
    for batch in batches:
        (loss, rest), grads = gradient(params, rest, *pick(arrays, targets, to_jax(batch)))
        params, state = update(params, state, grads)
        yield float(loss), by_path(params) | mapped_values(rest, mapped)


def mapped_values(state: Any, mapped: set[str]) -> Weights:
    """The variables of `state` named in `mapped` (batch statistics), as NumPy arrays; the rest (RNG state) left."""
    from flax import nnx

    return {path_name(p): np.array(v.get_value()) for p, v in nnx.to_flat_state(state) if path_name(p) in mapped}
