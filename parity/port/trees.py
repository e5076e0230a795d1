"""Several inputs and structured outputs: a model's inputs as a tuple, its outputs as named arrays.

A model may return one array, a tuple (`(logits, state)`), a dict (`{"logits": ...}`) or a NamedTuple, nested;
the checks compare it leaf by leaf, each leaf named from the top: `output`, `output[0]`, `output.logits`,
`output[1].h`. A model may take several inputs (`model(tokens, mask)`); float arrays are cast to the run's
dtype, integer arrays (token ids, masks) are kept as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from parity.port.errors import PortError

if TYPE_CHECKING:
    import torch


def path_name(path: Sequence[Any]) -> str:
    """A Flax variable's path as one dotted name ("layers.0.kernel")."""
    return ".".join(str(part) for part in path)


def called(forward: Callable[..., Any] | None, model: Any, *inputs: Any) -> Any:
    """`forward(model, *inputs)` (a port's `torch_forward` or `flax_forward`), or `model(*inputs)` without one."""
    return model(*inputs) if forward is None else forward(model, *inputs)


def leaves(output: Any, to_array: Callable[[Any], np.ndarray], name: str = "output") -> list[tuple[str, np.ndarray]]:
    """(name, array) for every array in `output`, in order (dicts in their own order, None left out)."""
    if output is None:
        return []
    if isinstance(output, dict):
        return [leaf for key, value in output.items() for leaf in leaves(value, to_array, f"{name}.{key}")]
    if isinstance(output, tuple) and hasattr(output, "_fields"):  # a NamedTuple: by field name
        fields = zip(output._fields, output, strict=True)
        return [leaf for key, value in fields for leaf in leaves(value, to_array, f"{name}.{key}")]
    if isinstance(output, tuple | list):
        return [leaf for index, value in enumerate(output) for leaf in leaves(value, to_array, f"{name}[{index}]")]
    if not (hasattr(output, "shape") and hasattr(output, "dtype")) and not isinstance(output, int | float):
        raise PortError(
            f"{name}: the model returns a {type(output).__name__} there, not an array (nor a tuple, list or dict "
            "of arrays); say which arrays to compare: Port(torch_forward=lambda model, *inputs: "
            "model(*inputs).logits), and flax_forward likewise"
        )
    return [(name, to_array(output))]


def as_inputs(inputs: Any) -> tuple[np.ndarray, ...]:
    """One array, or a tuple or list of arrays, as a tuple of NumPy arrays."""
    if isinstance(inputs, tuple | list):
        return tuple(np.asarray(array) for array in inputs)
    return (np.asarray(inputs),)


def in_dtype(inputs: tuple[np.ndarray, ...], dtype: str) -> tuple[np.ndarray, ...]:
    """Float inputs cast to `dtype`; integer and boolean inputs (token ids, masks) kept."""
    return tuple(x.astype(dtype) if np.issubdtype(x.dtype, np.floating) else x for x in inputs)


def to_jax(array: np.ndarray, dtype: Any = None) -> Any:
    """A NumPy array on JAX's default device, in `dtype` (or its own) as JAX holds it (float64 is float32 while
    x64 is off). A transfer (`jax.device_put`), where `jnp.asarray` would run a staged copy that XLA compiles
    once for each new shape and dtype: a port's every weight and input paid a compile on the way in."""
    import jax

    array = np.asarray(array)
    return jax.device_put(
        array.astype(jax.dtypes.canonicalize_dtype(array.dtype if dtype is None else dtype), copy=False)
    )


def take(inputs: tuple[Any, ...], batch: np.ndarray) -> tuple[Any, ...]:
    """Every input's rows `batch` (NumPy or JAX arrays)."""
    return tuple(x[batch] for x in inputs)


def first_leaf(outputs: Any) -> Any:
    """A model's output, or the first array of a tuple or dict output (its logits, by convention)."""
    while isinstance(outputs, tuple | list | dict):
        outputs = next(iter(outputs.values())) if isinstance(outputs, dict) else outputs[0]
    return outputs


def torch_cross_entropy(outputs: Any, labels: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy over integer labels, on the first output: `[rows, classes]` logits with `[rows]`
    labels, or `[rows, tokens, classes]` with `[rows, tokens]` (as optax's; torch's own takes axis 1)."""
    import torch.nn.functional as F

    logits = first_leaf(outputs)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def flax_cross_entropy(outputs: Any, labels: Any) -> Any:
    """Mean softmax cross-entropy over integer labels (optax), on the first output (the class axis last)."""
    import optax

    return optax.softmax_cross_entropy_with_integer_labels(first_leaf(outputs), labels).mean()


def squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape without its leading axes of size 1."""
    while shape and shape[0] == 1:
        shape = shape[1:]
    return shape


def same_values(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Whether two output shapes hold the same values in the same order: equal but for leading axes of size 1
    (torch's position embedding of `[1, T]`), or for the last axis split in one (`nnx.Einsum`'s `[..., heads,
    head_dim]` for a Linear's `[..., W]`)."""
    a, b = squeezed(a), squeezed(b)
    shared = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    rest_a, rest_b = a[shared:], b[shared:]
    return rest_a == rest_b or (1 in (len(rest_a), len(rest_b)) and int(np.prod(rest_a)) == int(np.prod(rest_b)))
