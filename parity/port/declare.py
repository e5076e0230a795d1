"""Declare a PyTorch -> Flax NNX port: the two models, and how their weights and submodules correspond.

    port = Port(
        name="cnn",
        torch_model=TorchCNN,                       # builds the PyTorch module
        flax_model=lambda: FlaxCNN(nnx.Rngs(0)),    # builds the Flax NNX module
        weights=[                                   # (state_dict name(s), Flax path(s), steps torch -> Flax)
            ("conv1.weight", "conv1.kernel", permute(2, 3, 1, 0)),
            ("conv1.bias", "conv1.bias"),
            ("fc.weight", "fc.kernel", transpose()),
            ("fc.bias", "fc.bias"),
        ],
        submodules=[("conv1", "conv1", permute(0, 2, 3, 1)), ("fc", "fc")],  # outputs compared, in order
        inputs=[permute(0, 2, 3, 1)],               # a PyTorch input -> the Flax model's input
    )

The weight table is checked against both models before anything runs (`check_declaration`): every name
exists, every parameter is mapped once, every shape comes out right; a mismatch is one line that names
the tensors and guesses the fix. From the table come both conversions (`parity.port.weights`), exact both
ways; `parity.port.check` runs the checks on a declared port.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from common.errors import SeqMnistError
from parity.port import transforms
from parity.port.transforms import Shape, Step

if TYPE_CHECKING:
    import torch
    from flax import nnx


class PortError(SeqMnistError):
    """A port's declaration does not fit its models (one line: which entry, what was expected)."""


def torch_cross_entropy(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy over integer labels (nn.CrossEntropyLoss())."""
    import torch.nn.functional as F

    return F.cross_entropy(outputs, labels)


def flax_cross_entropy(outputs: Any, labels: Any) -> Any:
    """Mean softmax cross-entropy over integer labels (optax)."""
    import optax

    return optax.softmax_cross_entropy_with_integer_labels(outputs, labels).mean()


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row of a weight table: PyTorch tensor(s) -> Flax parameter(s) through `steps`."""

    torch: tuple[str, ...]
    flax: tuple[str, ...]
    steps: tuple[Step, ...]

    def __str__(self) -> str:
        return f"{' + '.join(self.torch)} -> {' + '.join(self.flax)}"


def parse_entry(row: Sequence[Any], kind: str = "weights") -> Entry:
    """`(torch name or names, Flax path or paths, *steps)` -> Entry."""
    if isinstance(row, str) or len(row) < 2:
        raise PortError(f"{kind}: expected (torch name, flax path, *steps), got {row!r}")
    torch_names, flax_paths, *steps = row

    def names(value: Any) -> tuple[str, ...]:
        return (value,) if isinstance(value, str) else tuple(value)

    for step in steps:
        if not isinstance(step, Step):
            raise PortError(f"{kind}: {row[0]!r}: {step!r} is not a step (use transpose(), permute(...), ...)")
    for step in steps[:-1]:
        if isinstance(step, transforms.Reshape) and step.shape is None:
            raise PortError(f"{kind}: {row[0]!r}: reshape() without a shape must be the last step")
    return Entry(names(torch_names), names(flax_paths), tuple(steps))


@dataclasses.dataclass(frozen=True)
class Port:
    """A PyTorch module, its Flax NNX port, and the declared correspondence between them.

    `weights`: rows `(torch state_dict name(s), Flax parameter path(s), *steps)`, steps from
    `parity.port.transforms`, applied torch -> Flax. `submodules`: rows `(torch module name, Flax module path,
    *steps)`, whose outputs the submodule check compares (the steps turn the torch output into the Flax
    layout, e.g. NCHW -> NHWC). `inputs`, `outputs`: steps from a torch input to the Flax input, and from
    the torch output to the Flax output. The losses take (outputs, labels) in each framework.
    Both models are run in eval mode (dropout off); a Flax model must leave `dtype` unset (None) so that
    float64 weights and inputs compute in float64. A factory that takes a `dtype` argument is given the
    run's ("float32" or "float64"), for a model that needs to know (an RNN's zero initial state has one).
    """

    name: str
    torch_model: Callable[..., torch.nn.Module]  # () or (dtype="float32" | "float64")
    flax_model: Callable[..., nnx.Module]
    weights: Sequence[Sequence[Any]]
    submodules: Sequence[Sequence[Any]] = ()
    inputs: Sequence[Step] = ()
    outputs: Sequence[Step] = ()
    torch_loss: Callable[[Any, Any], Any] = torch_cross_entropy
    flax_loss: Callable[[Any, Any], Any] = flax_cross_entropy

    @property
    def entries(self) -> list[Entry]:
        return [parse_entry(row) for row in self.weights]

    @property
    def submodule_entries(self) -> list[Entry]:
        return [parse_entry(row, "submodules") for row in self.submodules]


def unknown_name(kind: str, name: str, known: Sequence[str]) -> PortError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; it has {', '.join(list(known)[:6])}, ..."
    return PortError(f"{kind}: {name!r} does not exist{hint}")


def check_declaration(entries: Sequence[Entry], torch_shapes: dict[str, Shape], flax_shapes: dict[str, Shape]) -> None:
    """Every name exists, every parameter is mapped exactly once, every shape comes out right; else PortError."""
    seen_torch: set[str] = set()
    seen_flax: set[str] = set()
    for entry in entries:
        for name in entry.torch:
            if name not in torch_shapes:
                raise unknown_name("weights: the torch model's state_dict", name, list(torch_shapes))
            if name in seen_torch:
                raise PortError(f"weights: torch tensor {name!r} is mapped twice")
            seen_torch.add(name)
        for path in entry.flax:
            if path not in flax_shapes:
                raise unknown_name("weights: the Flax model's parameter", path, list(flax_shapes))
            if path in seen_flax:
                raise PortError(f"weights: Flax parameter {path!r} is mapped twice")
            seen_flax.add(path)
        check_entry_shapes(entry, [torch_shapes[n] for n in entry.torch], [flax_shapes[p] for p in entry.flax])
    for kind, everything, seen in (
        ("torch tensors", torch_shapes, seen_torch),
        ("Flax parameters", flax_shapes, seen_flax),
    ):
        left = [name for name in everything if name not in seen]
        if left:
            raise PortError(
                f"weights: {kind} the map leaves out: {', '.join(left[:6])}{', ...' if len(left) > 6 else ''} "
                f"({describe_left_out(left, everything)})"
            )


def module_of(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else "(top)"


def describe_left_out(left: list[str], everything: Iterable[str]) -> str:
    """Which modules have nothing mapped, and which only part: `module fc2 has nothing mapped` or
    `fc1: only fc1.weight is mapped`."""
    mapped: dict[str, list[str]] = {}
    for name in everything:
        if name not in left:
            mapped.setdefault(module_of(name), []).append(name)
    modules = sorted({module_of(name) for name in left})
    whole = [module for module in modules if module not in mapped]
    parts = [f"module{'s' if len(whole) > 1 else ''} {', '.join(whole[:4])} with nothing mapped"] if whole else []
    parts += [f"{module}: only {', '.join(mapped[module])} mapped" for module in modules if module in mapped][:4]
    return "; ".join(parts)


def check_entry_shapes(entry: Entry, sources: list[Shape], destinations: list[Shape]) -> None:
    """The entry's steps turn the torch shapes into the Flax shapes; else one line with a guess at the fix."""
    probe = [np.empty(shape, dtype=np.uint8) for shape in sources]
    steps = " ".join(str(step) for step in entry.steps) or "no steps"
    try:
        results = [array.shape for array in transforms.apply(entry.steps, probe, destinations)]
    except ValueError as error:
        raise PortError(f"weights: {entry}: {error}") from None
    if len(results) != len(destinations):
        hint = f"split({len(destinations)})?" if len(results) == 1 else "concat()?"
        raise PortError(
            f"weights: {entry}: {steps} gives {len(results)} arrays for {len(destinations)} parameters; {hint}"
        )
    for result, destination, path in zip(results, destinations, entry.flax, strict=True):
        if result != destination:
            where = f"{entry.torch[0]} {sources[0]}" if len(sources) == 1 else " + ".join(entry.torch)
            became = f"becomes {result} after {steps}" if entry.steps else "is kept as it is (no steps)"
            raise PortError(
                f"weights: torch {where} {became}, but Flax {path} is {destination}; "
                f"{transforms.guess_fix(result, destination)}"
            )
