"""A declared port's weights: each model's by name, the two conversions through the table, and both models
built holding the same values.

Everything here is in one dtype at a time: a check builds a `Pair` for float32, is done with it, then for
float64 (a large model's two copies in both dtypes at once would double the memory a check needs).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from parity.compare import Weights, noisy_weights
from parity.port import transforms
from parity.port.declare import Entry, Port, check_declaration
from parity.port.transforms import Shape

if TYPE_CHECKING:
    import torch
    from flax import nnx


def path_name(path: Sequence[Any]) -> str:
    return ".".join(str(part) for part in path)


def flax_parameters(model: nnx.Module) -> dict[str, Any]:
    """Flax parameter path ("layers.0.attention.query.kernel") -> its nnx.Param."""
    from flax import nnx

    return {path_name(path): variable for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def flax_weights(model: nnx.Module) -> Weights:
    """Every Flax parameter as a NumPy array, by path."""
    return {name: np.asarray(variable.get_value()) for name, variable in flax_parameters(model).items()}


def torch_weights(model: torch.nn.Module) -> Weights:
    """Every entry of the state_dict as a NumPy array (a copy)."""
    return {name: tensor.detach().cpu().numpy().copy() for name, tensor in model.state_dict().items()}


def shapes(weights: dict[str, Any]) -> dict[str, Shape]:
    return {name: tuple(value.shape) for name, value in weights.items()}


def flax_shapes(model: nnx.Module) -> dict[str, Shape]:
    """Every Flax parameter's shape, by path (nothing copied)."""
    return {name: tuple(variable.get_value().shape) for name, variable in flax_parameters(model).items()}


# ---- conversions ----------------------------------------------------------------------------------------


def to_flax(entries: Sequence[Entry], weights: Weights, flax_shapes: dict[str, Shape]) -> Weights:
    """PyTorch-layout weights (state_dict names) -> Flax parameters (paths), through the table."""
    out: Weights = {}
    for entry in entries:
        targets = [flax_shapes[path] for path in entry.flax]
        arrays = transforms.apply(entry.steps, [weights[name] for name in entry.torch], targets)
        out.update({path: np.ascontiguousarray(array) for path, array in zip(entry.flax, arrays, strict=True)})
    return out


def to_torch(entries: Sequence[Entry], weights: Weights, torch_shapes: dict[str, Shape]) -> Weights:
    """Flax parameters (paths) -> PyTorch-layout weights (state_dict names): each table row undone."""
    out: Weights = {}
    for entry in entries:
        sources = [torch_shapes[name] for name in entry.torch]
        arrays = transforms.invert(entry.steps, [weights[path] for path in entry.flax], sources)
        out.update({name: np.ascontiguousarray(array) for name, array in zip(entry.torch, arrays, strict=True)})
    return out


# ---- loading weights into the models --------------------------------------------------------------------


def load_torch(model: torch.nn.Module, weights: Weights, dtype: str) -> torch.nn.Module:
    """`model` in `dtype` ("float32" or "float64") holding exactly `weights` (strict: every name, every shape)."""
    import torch

    model = model.to(torch.float64 if dtype == "float64" else torch.float32)
    model.load_state_dict({name: torch.from_numpy(np.array(array)) for name, array in weights.items()}, strict=True)
    return model


def load_flax(model: nnx.Module, weights: Weights) -> nnx.Module:
    """`model` holding `weights` (Flax paths), each set in its own dtype."""
    import jax.numpy as jnp

    for path, variable in flax_parameters(model).items():
        variable.set_value(jnp.asarray(weights[path]))
    return model


@dataclasses.dataclass
class Pair:
    """Both models of a port, built and holding the same weights, in one dtype."""

    torch_model: Any
    flax_model: Any
    entries: list[Entry]
    torch_shapes: dict[str, Shape]
    flax_shapes: dict[str, Shape]


def build(factory: Callable[..., Any], dtype: str) -> Any:
    """`factory()`, or `factory(dtype=...)` when it takes a `dtype` (a model whose state has one, e.g. an RNN's h0)."""
    return factory(dtype=dtype) if "dtype" in inspect.signature(factory).parameters else factory()


def build_pair(port: Port, weights: Weights) -> Pair:
    """The two models holding `weights` (PyTorch layout, one float dtype), declaration checked first."""
    dtype = str(next(array.dtype for array in weights.values() if np.issubdtype(array.dtype, np.floating)))
    torch_model: Any = build(port.torch_model, dtype)
    flax_model: Any = build(port.flax_model, dtype)
    torch_shapes = shapes(torch_model.state_dict())
    flax_shapes = shapes(flax_weights(flax_model))
    entries = port.entries
    check_declaration(entries, torch_shapes, flax_shapes)
    torch_model = load_torch(torch_model, weights, dtype).eval()
    flax_model = load_flax(flax_model, to_flax(entries, weights, flax_shapes))
    flax_model.eval()
    return Pair(torch_model, flax_model, entries, torch_shapes, flax_shapes)


def port_weights(port: Port, seed: int = 0) -> Weights:
    """The torch model's own initialisation (seeded) plus noise: the weights every check starts from (float32)."""
    import torch

    torch.manual_seed(seed)
    return noisy_weights(torch_weights(build(port.torch_model, "float32")), seed)


def as_dtype(weights: Weights, dtype: str) -> Weights:
    """Every float array in `dtype`; integer arrays (counters) kept."""
    return {
        name: array.astype(dtype) if np.issubdtype(array.dtype, np.floating) else array
        for name, array in weights.items()
    }
