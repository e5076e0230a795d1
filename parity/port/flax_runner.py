"""The Flax NNX side of a port check: the model built holding given weights, run in float32 or float64.

The mirror of `torch_runner`: outputs, each declared submodule's outputs, the loss gradients and a run of
optax steps, as NumPy arrays keyed by Flax path.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ParamSpec, TypeVar

import numpy as np

from parity.compare import Weights
from parity.port import transforms
from parity.port.building import built_to_fill
from parity.port.declare import Entry, Port, PortError, unknown_name
from parity.port.optimizer import Optimizer
from parity.port.trees import called, first_leaf, leaves, path_name, same_values, take, to_jax
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


def iter_modules(model: Any) -> list[tuple[str, Any]]:
    from flax import nnx

    return [(path_name(path), module) for path, module in nnx.iter_modules(model)]


def flax_inputs(port: Port, inputs: tuple[np.ndarray, ...]) -> tuple[Any, ...]:
    """PyTorch-layout inputs turned into the Flax model's, through the port's `inputs` steps, as JAX arrays."""
    steps = port.input_steps(len(inputs))
    return tuple(to_jax(transforms.apply(s, [x], [])[0]) for s, x in zip(steps, inputs, strict=True))


def flax_forward(
    port: Port, model: Any, inputs: tuple[np.ndarray, ...], compiled: bool = False
) -> list[tuple[str, np.ndarray]]:
    """The model's outputs on `inputs`, every array named as `torch_runner.torch_forward` names them.

    `compiled`: one compiled program per model structure and input shapes, for a caller that runs the same
    structure many times (coverage: once per entry). An eager call compiles each loop and primitive apart,
    every call, but compiles nothing whole: for a single pass it is the quicker (a float64 ResNet's whole
    forward takes XLA:CPU longer to compile than to run eagerly). The state the forward pass changes (batch
    statistics in train mode, RNG streams) is written back into `model`; a model whose forward pass cannot
    be traced (Python control flow on values) runs eagerly."""
    import jax
    from flax import nnx

    xs = flax_inputs(port, inputs)
    if not compiled:
        return leaves(port.run_flax(model, *xs), np.asarray)
    graphdef, state = nnx.split(model)
    try:
        outputs, after = compiled_forward(port.flax_forward, graphdef, state, xs)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return leaves(port.run_flax(model, *xs), np.asarray)
    nnx.update(model, after)
    return leaves(outputs, np.asarray)


def _forward(run: Callable[..., Any] | None, graphdef: Any, state: Any, xs: tuple[Any, ...]) -> tuple[Any, Any]:
    from flax import nnx

    model = nnx.merge(graphdef, state)
    outputs = called(run, model, *xs)
    return outputs, nnx.state(model)


@functools.cache
def _jitted_forward() -> Any:
    import jax

    return jax.jit(_forward, static_argnums=(0, 1))


def compiled_forward(run: Callable[..., Any] | None, graphdef: Any, state: Any, xs: tuple[Any, ...]) -> tuple[Any, Any]:
    """`_forward` compiled, once per (way of calling, structure, input shapes); `run` is `Port.flax_forward`."""
    return _jitted_forward()(run, graphdef, state, xs)  # type: ignore[no-any-return]


def flax_submodule_outputs(port: Port, model: Any, inputs: tuple[np.ndarray, ...]) -> dict[str, list[np.ndarray]]:
    """Flax module path -> the outputs of its `__call__`, in call order.

    Only the declared modules are recorded, by identity: each one's class gets a recording `__call__` for
    the length of one eager forward pass. (`nnx.capture(method_outputs=...)` records every module, and a
    module called inside `nnx.scan`, such as a recurrent cell, then breaks the scan's carry.) A declared
    module that runs only inside a JAX transform is a copy there, so it records nothing.
    """
    modules = dict(iter_modules(model))
    wanted: dict[int, str] = {}
    for entry in port.submodule_entries:
        if entry.flax[0] not in modules:
            raise unknown_name("submodules: the Flax module", entry.flax[0], [n for n in modules if n])
        wanted[id(modules[entry.flax[0]])] = entry.flax[0]
    outputs: dict[str, list[np.ndarray]] = {}
    with recording_calls({type(modules[path]) for path in wanted.values()}, wanted, outputs):
        port.run_flax(model, *flax_inputs(port, inputs))
    return outputs


def spliced(output: Any, torch_output: np.ndarray | None) -> Any:
    """torch's output in place of a Flax module's array output of the same values (else the module's own)."""
    if torch_output is None or not hasattr(output, "shape") or not same_values(torch_output.shape, output.shape):
        return output
    return to_jax(torch_output.reshape(output.shape), output.dtype)


@contextlib.contextmanager
def recording_calls(
    classes: set[type],
    wanted: dict[int, str],
    outputs: dict[str, list[np.ndarray]],
    replacing: dict[str, list[np.ndarray]] | None = None,
) -> Iterator[None]:
    """Within the block, a call of any instance in `wanted` (by id) appends its output to outputs[its name]
    (and with `replacing`, returns replacing[its name]'s next array instead, where it holds the same values)."""
    patched = []
    for cls in classes:
        original = cls.__call__

        def recorder(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            output = __original(self, *args, **kwargs)
            name = wanted.get(id(self))
            if name is not None:
                outputs.setdefault(name, []).append(np.asarray(first_leaf(output)))
                if replacing is not None:
                    given = replacing.get(name, [])
                    call = len(outputs[name]) - 1
                    return spliced(output, given[call] if call < len(given) else None)
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
    """`(params, rest, inputs, labels) -> ((loss, rest after the forward), gradients)` for the model's structure
    (in train mode the forward updates the batch statistics in `rest`). `nnx.value_and_grad` on the merged
    model, not `jax.value_and_grad` on its state: a module holding an RNG stream (`nnx.RNN`'s) advances it in
    the forward pass, which only NNX's own transform allows."""
    from flax import nnx

    def value_and_grad(params: Any, rest: Any, inputs: Any, labels: Any) -> Any:
        model = nnx.merge(graphdef, params, rest)
        loss, grads = nnx.value_and_grad(lambda model: port.flax_loss(port.run_flax(model, *inputs), labels))(model)
        return (loss, nnx.state(model, nnx.Not(nnx.Param))), grads

    return value_and_grad


def by_path(state: Any) -> Weights:
    """An nnx.State as NumPy arrays (copies) by Flax path."""
    from flax import nnx

    return {path_name(p): np.array(v.get_value()) for p, v in nnx.to_flat_state(state)}


def flax_gradients(port: Port, model: Any, inputs: tuple[np.ndarray, ...], labels: np.ndarray) -> tuple[float, Weights]:
    """The loss and its gradient for every Flax parameter, by path."""
    import jax

    graphdef, params, rest = split_params(model)
    value_and_grad = jax.jit(flax_value_and_grad(port, graphdef))
    (loss, _), grads = value_and_grad(params, rest, flax_inputs(port, inputs), labels)
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
    the gradients check's compiled program (the compilation cache holds it for a batch of as many rows as that
    check's inputs), then a compiled update, parameters and optimizer state donated (a large model held once).
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

    gradient, state = jax.jit(flax_value_and_grad(port, graphdef)), init(params)
    pick = jax.jit(lambda arrays, targets, batch: (take(arrays, batch), targets[batch]))  # one small program
    for batch in batches:
        (loss, rest), grads = gradient(params, rest, *pick(arrays, targets, to_jax(batch)))
        params, state = update(params, state, grads)
        yield float(loss), by_path(params) | mapped_values(rest, mapped)


def mapped_values(state: Any, mapped: set[str]) -> Weights:
    """The variables of `state` named in `mapped` (batch statistics), as NumPy arrays; the rest (RNG state) left."""
    from flax import nnx

    return {path_name(p): np.array(v.get_value()) for p, v in nnx.to_flat_state(state) if path_name(p) in mapped}
