"""The Flax model's forward passes: its outputs, each declared submodule's outputs, and the units check's pass
with torch's outputs handed on in place of each declared module's own, one compiled program each.

A pass is compiled (`jax.jit`, once per way of calling, model structure, recorded modules and input shapes, kept for
the length of one check: `parity.port.scope`), not run op by op: an eager call compiles every loop (an `nnx.RNN`'s
scan) and every new primitive shape apart, each call; without JAX's compilation cache a compiled pass takes a
fraction of that for the examples and the zoo, with it about as long (docs/performance.md, issue 38's eighth round).
A declared module is recorded by a recording `__call__` on its class for the length of the trace; what it records
are the traced arrays, which the program returns. (`nnx.capture(method_outputs=...)` records every module, and a
module called inside `nnx.scan`, such as a recurrent cell, then breaks the scan's carry.) A declared module that
runs only inside a JAX transform (`nnx.scan`, `nnx.remat`) is a copy there, so it records nothing, compiled or
eager. The state a pass changes (batch statistics in train mode, RNG streams) is written back into the model. A
model whose forward pass cannot be traced (Python control flow on values, a module recorded inside a loop of its
own), or that returns what a program cannot, runs eagerly, as does a pass asked for so (`compiled=False`: a
streaming run, whose float64 copies are made one weight at a time).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from parity.port import transforms
from parity.port.declare import Port, PortError, unknown_name
from parity.port.scope import kept
from parity.port.trees import called, first_leaf, leaves, path_name, same_values, to_jax

Outputs = list[tuple[str, np.ndarray]]  # (name, array) for every array of the model's output, in order
Recorded = dict[str, list[np.ndarray]]  # Flax module path -> the outputs of its calls, in call order


def iter_modules(model: Any) -> list[tuple[str, Any]]:
    """(dotted path, module) for every module of an NNX model, the model itself at ""."""
    from flax import nnx

    return [(path_name(path), module) for path, module in nnx.iter_modules(model)]


def flax_inputs(port: Port, inputs: tuple[np.ndarray, ...]) -> tuple[Any, ...]:
    """PyTorch-layout inputs turned into the Flax model's, through the port's `inputs` steps, as JAX arrays."""
    steps = port.input_steps(len(inputs))
    return tuple(to_jax(transforms.apply(s, [x], [])[0]) for s, x in zip(steps, inputs, strict=True))


def flax_forward(port: Port, model: Any, inputs: tuple[np.ndarray, ...], compiled: bool = True) -> Outputs:
    """The model's outputs on `inputs`, every array named as `torch_runner.torch_forward` names them."""
    return flax_pass(port, model, inputs, compiled=compiled)[0]


def flax_pass(
    port: Port,
    model: Any,
    inputs: tuple[np.ndarray, ...],
    *,
    record: bool = False,
    replacing: dict[str, list[np.ndarray]] | None = None,
    compiled: bool = True,
) -> tuple[Outputs, Recorded]:
    """One forward pass: the outputs and (`record`, or `replacing`) each declared submodule's outputs. With
    `replacing` (Flax path -> torch's outputs of its calls, in the Flax layout), each declared module's call
    hands on torch's output of that call in place of its own, where it holds the same values."""
    from flax import nnx

    modules = dict(iter_modules(model))
    paths: tuple[str, ...] = ()
    if record or replacing is not None:
        for entry in port.submodule_entries:
            if entry.flax[0] not in modules:
                raise unknown_name("submodules: the Flax module", entry.flax[0], [n for n in modules if n])
        paths = tuple(dict.fromkeys(entry.flax[0] for entry in port.submodule_entries))
    xs = flax_inputs(port, inputs)
    if compiled:
        given = {path: [to_jax(array) for array in arrays] for path, arrays in (replacing or {}).items()}
        graphdef, state = nnx.split(model)
        try:
            program = kept("pass", _pass_program)
            named, traced, after = program(port.flax_forward, graphdef, paths, state, xs, given)
        except PortError:
            raise
        except Exception:  # not traceable, or refused: the eager pass runs it, or says why not
            pass
        else:
            nnx.update(model, after)
            outputs = [(key.split(" ", 1)[1], np.asarray(array)) for key, array in sorted(named.items())]
            return outputs, {path: [np.asarray(array) for array in arrays] for path, arrays in traced.items()}
    recorded: Recorded = {}
    wanted = {id(modules[path]): path for path in paths}
    with recording_calls({type(modules[path]) for path in paths}, wanted, recorded, replacing, np.asarray):
        output = port.run_flax(model, *xs)
    return leaves(output, np.asarray), recorded


def _traced_pass(
    run: Callable[..., Any] | None,
    graphdef: Any,
    paths: tuple[str, ...],
    state: Any,
    xs: tuple[Any, ...],
    given: dict[str, list[Any]],
) -> tuple[dict[str, Any], dict[str, list[Any]], Any]:
    """`flax_pass` as one program: the outputs keyed "<index> <name>" (a program returns no strings; the keys
    keep both the names and their order), the recorded arrays, and the state after."""
    from flax import nnx

    model = nnx.merge(graphdef, state)
    modules = dict(iter_modules(model))
    wanted = {id(modules[path]): path for path in paths}
    recorded: dict[str, list[Any]] = {}
    keep: Callable[[Any], Any] = lambda array: array  # noqa: E731 (the traced array itself)
    with recording_calls({type(modules[path]) for path in paths}, wanted, recorded, given or None, keep):
        output = called(run, model, *xs)
    named = {f"{index:08d} {name}": array for index, (name, array) in enumerate(leaves(output, keep))}
    return named, recorded, nnx.state(model)


def _pass_program() -> Any:
    """`_traced_pass` compiled, through a function of its own: JAX keeps a function's traces for as long as the
    function lives, so a program made for one check must not trace `_traced_pass` itself."""
    import jax

    def traced(*args: Any) -> Any:
        return _traced_pass(*args)

    return jax.jit(traced, static_argnums=(0, 1, 2))


def spliced(output: Any, given: Any) -> Any:
    """torch's output in place of a Flax module's array output of the same values (else the module's own)."""
    if given is None or not hasattr(output, "shape") or not same_values(tuple(given.shape), tuple(output.shape)):
        return output
    if isinstance(given, np.ndarray):
        return to_jax(given.reshape(output.shape), output.dtype)
    return given.reshape(output.shape).astype(output.dtype)


@contextlib.contextmanager
def recording_calls(
    classes: set[type],
    wanted: dict[int, str],
    outputs: dict[str, list[Any]],
    replacing: dict[str, list[Any]] | None = None,
    keep: Callable[[Any], Any] = np.asarray,
) -> Iterator[None]:
    """Within the block, a call of any instance in `wanted` (by id) appends `keep` of its output to outputs[its
    name] (and with `replacing`, returns replacing[its name]'s next array instead, where it holds the same
    values)."""
    patched = []
    for cls in classes:
        original = cls.__call__

        def recorder(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            output = __original(self, *args, **kwargs)
            name = wanted.get(id(self))
            if name is not None:
                outputs.setdefault(name, []).append(keep(first_leaf(output)))
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
