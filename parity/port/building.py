"""Each side's model built from its factory: for real, or abstractly (the structure, no initialiser run), or
abstractly with the state no entry fills computed alone (`built_to_fill`): XLA:CPU compiles a model's
initialisers once per parameter shape, which is most of a real build's time.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection
from typing import Any

from parity.port.scope import kept
from parity.port.trees import path_name


def build(factory: Callable[..., Any], dtype: str) -> Any:
    """`factory()`, or `factory(dtype=...)` when it takes a `dtype` (a model whose state has one, e.g. an RNN's h0)."""
    # a class is asked through its __init__ (an nnx.Module class's own signature is its metaclass's)
    target = factory
    if isinstance(factory, type):
        target = next(vars(cls)["__init__"] for cls in factory.__mro__ if "__init__" in vars(cls))
    return factory(dtype=dtype) if "dtype" in inspect.signature(target).parameters else factory()


def structure(factory: Callable[..., Any], dtype: str) -> Any | None:
    """`build(factory, dtype)` built abstractly (`nnx.eval_shape`: every variable's shape and type, no
    initialiser run: each of a model's initialisers is a program XLA compiles for each new shape), or None
    when the factory computes on values."""
    from flax import nnx

    try:
        return nnx.eval_shape(lambda: build(factory, dtype))
    except Exception:
        return None


def built_abstractly(factory: Callable[..., Any], dtype: str) -> Any:
    """`structure(factory, dtype)`, built for real when the factory computes on values (its own error raised there)."""
    return build(factory, dtype) if (model := structure(factory, dtype)) is None else model


def built_to_fill(factory: Callable[..., Any], dtype: str, filled: Collection[str]) -> Any:
    """`build(factory, dtype)` for a caller that then sets every variable in `filled`: built abstractly
    (`nnx.eval_shape`: the structure, no initialiser run, as `jax_impl.convert.from_canonical` builds), and the
    state `filled` leaves (a variable left unported keeps its initial value; random-number state needs real
    keys) computed by one compiled build that returns it alone: XLA drops the initialisers of the rest, which
    are most of a large model's build. Both are kept, for the rest of the check (`scope.kept`), for the next
    build of the same factory, dtype and entries, under JAX's same x64 switch and default device: that build
    is the kept structure made anew (`nnx.merge`), its own variables and buffers. Built for real when the
    factory computes on values."""
    import jax
    from flax import nnx

    switches = (bool(jax.config.jax_enable_x64), str(jax.config.jax_default_device))  # type: ignore[attr-defined]
    key = ("blueprint", factory, dtype, frozenset(filled), *switches)
    blueprint = kept(key, lambda: _blueprint(factory, dtype, filled))
    if blueprint is None:
        return build(factory, dtype)  # it computes on values (its own error raised there)
    graphdef, abstract, values = blueprint
    model = nnx.merge(graphdef, abstract, copy=True)  # its own variables, none shared with the kept structure
    values = jax.device_put(values, may_alias=False)  # its own buffers: a trajectory step donates its parameters
    for path, variable in nnx.to_flat_state(nnx.state(model)):
        if path_name(path) in values:
            variable.set_value(values[path_name(path)])
    return model


def _blueprint(
    factory: Callable[..., Any], dtype: str, filled: Collection[str]
) -> tuple[Any, Any, dict[str, Any]] | None:
    """(graphdef, abstract state, the values of the state `filled` leaves) of `build(factory, dtype)`, or None
    when the factory computes on values."""
    import jax
    from flax import nnx

    if (model := structure(factory, dtype)) is None:
        return None
    graphdef, abstract = nnx.split(model)
    left = {path_name(p) for p, _ in nnx.to_flat_state(abstract) if path_name(p) not in filled}
    values: dict[str, Any] = {}
    if left:
        values = jax.jit(
            lambda: {
                path_name(p): v.get_value()
                for p, v in nnx.to_flat_state(nnx.state(build(factory, dtype)))
                if path_name(p) in left
            }
        )()
    return graphdef, abstract, values
