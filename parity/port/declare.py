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
import fnmatch
from collections.abc import Callable, Iterable, Sequence, Set
from typing import TYPE_CHECKING, Any

import numpy as np

from parity.port import transforms
from parity.port.errors import PortError as PortError  # re-exported: its callers import it from here
from parity.port.transforms import Shape, Step
from parity.port.trees import called, flax_cross_entropy, torch_cross_entropy

if TYPE_CHECKING:
    import torch
    from flax import nnx


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

    `weights`: rows `(torch state_dict name(s), Flax variable path(s), *steps)`, steps from
    `parity.port.transforms`, applied torch -> Flax. Parameters go to `nnx.Param`s, buffers (BatchNorm's
    running statistics) to any other `nnx.Variable` (`nnx.BatchStat`). `not_ported`: `fnmatch` patterns
    for torch tensors or Flax variables with no counterpart (`"*.num_batches_tracked"`); the report lists
    them. `submodules`: rows `(torch module name, Flax module path, *steps)`, whose outputs the submodule
    check compares (the steps turn the torch output into the Flax layout, e.g. NCHW -> NHWC).
    `inputs`: steps from a torch input to the Flax input: one list for a model of one input, or one list
    (or None) per input for a model called with several (`model(tokens, mask)`). `outputs`: steps from a
    torch output to the Flax one, for every output array, or a dict naming the output (`"output[0]"`,
    `"output.logits"`) each list is for. The losses take (outputs, labels) in each framework, the outputs
    as the model returns them (the default cross-entropy reads the first array). `torch_forward` and
    `flax_forward`: how each model is called, `(model, *inputs) -> output`; by default `model(*inputs)`. For
    a keyword the call needs (`rngs=None`, `deterministic=True`, a mask) or a leaf to take from what it
    returns (`lambda model, x: model(x).logits`), with no wrapper around either model. `torch_step` and
    `flax_step`: a project's own training step for the trajectory check, run as it is, where it has one
    (`(model, optimizer, *inputs, labels) -> loss` after stepping; `(graphdef, optax transformation, params,
    opt_state, *inputs, labels) -> (params, opt_state, loss)`, for a model whose state is all parameters);
    by default the port's loss, its gradient and one optimizer update. `unit_inputs`: for the
    units check, the steps from a torch submodule's inputs to its Flax counterpart's, where they are not its
    output's (`parity.port.local`).
    A Flax model must leave `dtype` unset (None) so that float64 weights and inputs compute in float64. A
    factory that takes a `dtype` argument is given the run's ("float32" or "float64"), for a model that
    needs to know (an RNN's zero initial state has one).
    """

    name: str
    torch_model: Callable[..., torch.nn.Module]  # () or (dtype="float32" | "float64")
    flax_model: Callable[..., nnx.Module]
    weights: Sequence[Sequence[Any]]
    submodules: Sequence[Sequence[Any]] = ()
    inputs: Sequence[Any] = ()  # steps, or one sequence of steps (or None) per input
    outputs: Sequence[Step] | dict[str, Sequence[Step]] = ()
    not_ported: Sequence[str] = ()
    torch_loss: Callable[[Any, Any], Any] = torch_cross_entropy
    flax_loss: Callable[[Any, Any], Any] = flax_cross_entropy
    torch_forward: Callable[..., Any] | None = None  # (model, *inputs) -> output; None: model(*inputs)
    flax_forward: Callable[..., Any] | None = None
    unit_inputs: dict[str, Sequence[Step]] | None = None  # torch submodule -> steps for its inputs (units check)
    torch_step: Callable[..., Any] | None = None  # (model, optimizer, *inputs, labels) -> loss
    flax_step: Callable[..., Any] | None = None  # (graphdef, transformation, params, state, *inputs, labels) -> ...

    def run_torch(self, model: Any, *inputs: Any) -> Any:  # the torch model's output, called as the port says
        return called(self.torch_forward, model, *inputs)

    def run_flax(self, model: Any, *inputs: Any) -> Any:  # the Flax model's output, called as the port says
        return called(self.flax_forward, model, *inputs)

    @property
    def entries(self) -> list[Entry]:
        return [parse_entry(row) for row in self.weights]

    @property
    def submodule_entries(self) -> list[Entry]:
        return [parse_entry(row, "submodules") for row in self.submodules]

    def input_steps(self, count: int) -> list[tuple[Step, ...]]:
        """The steps of each of `count` inputs (PortError when `inputs` does not say which are whose)."""
        if all(isinstance(step, Step) for step in self.inputs):
            if count > 1 and self.inputs:
                raise PortError(
                    f"inputs: the model takes {count} inputs but the port gives one list of steps; "
                    "give one per input, e.g. inputs=[(permute(0, 2, 3, 1),), None]"
                )
            return [tuple(self.inputs)] * count
        if len(self.inputs) != count:
            raise PortError(f"inputs: {len(self.inputs)} lists of steps for {count} inputs")
        per_input = [tuple(steps or ()) for steps in self.inputs]
        for index, steps in enumerate(per_input):
            if not all(isinstance(step, Step) for step in steps):
                raise PortError(f"inputs[{index}]: expected steps (permute(...), ...), got {steps!r}")
        return per_input

    def output_steps(self, leaf: str) -> tuple[Step, ...]:
        """The steps from the torch output array `leaf` ("output", "output[0]", "output.logits") to Flax's."""
        if isinstance(self.outputs, dict):
            return tuple(self.outputs.get(leaf, ()))
        return tuple(self.outputs)


def unknown_name(kind: str, name: str, known: Sequence[str]) -> PortError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; it has {', '.join(list(known)[:6])}, ..."
    return PortError(f"{kind}: {name!r} does not exist{hint}")


def matching(patterns: Sequence[str], names: Iterable[str]) -> list[str]:
    """The names that match any of the `fnmatch` patterns (`*.num_batches_tracked`)."""
    return [name for name in names if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)]


def check_not_ported(patterns: Sequence[str], torch_names: Iterable[str], flax_paths: Iterable[str]) -> list[str]:
    """The torch tensors and Flax variables declared as having no counterpart; a pattern that matches nothing
    is a PortError (a typo would otherwise hide a tensor that is simply unmapped)."""
    everything = [*torch_names, *flax_paths]
    for pattern in patterns:
        if not matching([pattern], everything):
            close = difflib.get_close_matches(pattern, everything, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PortError(f"not_ported: {pattern!r} matches no torch tensor or Flax variable{hint}")
    return matching(patterns, everything)


def check_kinds(entry: Entry, torch_buffers: Set[str], flax_types: dict[str, str]) -> None:
    """A parameter goes to an nnx.Param, a buffer (running statistics) to any other nnx.Variable; else PortError."""
    for name in entry.torch:
        for path in entry.flax:
            kind = flax_types.get(path, "Param")
            if name in torch_buffers and kind == "Param":
                raise PortError(
                    f"weights: torch buffer {name!r} is mapped to Flax {path!r}, an nnx.Param; a buffer goes to a "
                    "variable the optimizer does not train (nnx.BatchStat, or an nnx.Variable type of your own)"
                )
            if name not in torch_buffers and kind != "Param":
                raise PortError(
                    f"weights: torch parameter {name!r} is mapped to Flax {path!r}, an nnx.{kind}; a parameter goes "
                    "to an nnx.Param"
                )


def check_declaration(
    entries: Sequence[Entry],
    torch_shapes: dict[str, Shape],
    flax_shapes: dict[str, Shape],
    torch_buffers: Set[str] = frozenset(),
    flax_types: dict[str, str] | None = None,
    not_ported: Sequence[str] = (),
    ties: dict[str, str] | None = None,
) -> list[str]:
    """Every name exists, every tensor and variable is mapped exactly once or declared not ported, every
    kind and shape comes out right; else PortError. Returns the names declared not ported. `ties`: a tied
    torch name -> the first name of its tensor; mapping either name maps the tensor."""
    left_alone = check_not_ported(not_ported, torch_shapes, flax_shapes)
    tensor = (ties or {}).get
    seen_torch: set[str] = set()
    seen_flax: dict[str, str] = {}
    for entry in entries:
        for name in entry.torch:
            if name not in torch_shapes:
                raise unknown_name("weights: the torch model's state_dict", name, list(torch_shapes))
            if name in seen_torch:
                raise PortError(f"weights: torch tensor {name!r} is mapped twice")
            seen_torch.add(name)
        for path in entry.flax:
            if path not in flax_shapes:
                raise unknown_name("weights: the Flax model's variable", path, list(flax_shapes))
            if path in seen_flax:
                twin = seen_flax[path]
                tied = tensor(entry.torch[0], entry.torch[0]) == tensor(twin, twin)
                raise PortError(
                    f"weights: Flax variable {path!r} is mapped twice"
                    + (
                        f"; torch {entry.torch[0]!r} is tied to {twin!r} (one tensor): map one name only"
                        if tied
                        else ""
                    )
                )
            seen_flax[path] = entry.torch[0]
        for name in (*entry.torch, *entry.flax):
            if name in left_alone:
                raise PortError(f"weights: {name!r} is mapped ({entry}) and also declared not_ported")
        check_kinds(entry, torch_buffers, flax_types or {})
        check_entry_shapes(entry, [torch_shapes[n] for n in entry.torch], [flax_shapes[p] for p in entry.flax])
    for kind, everything, seen in (
        ("torch tensors", torch_shapes, seen_torch),
        ("Flax variables", flax_shapes, seen_flax),
    ):
        mapped = {tensor(name, name) for name in seen} if kind == "torch tensors" else set(seen)
        left = [name for name in everything if tensor(name, name) not in mapped and name not in left_alone]
        if left:
            raise PortError(
                f"weights: {kind} the map leaves out: {', '.join(left[:6])}{', ...' if len(left) > 6 else ''} "
                f"({describe_left_out(left, everything)}; a tensor with no counterpart goes in not_ported)"
            )
    return left_alone


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
    summed = len(sources) > 1 and len(set(sources)) == 1 and not transforms.one_way(entry.steps)
    add_hint = "add() first, if Flax keeps their sum (one bias for PyTorch's b_ih + b_hh)?"
    try:
        results = [array.shape for array in transforms.apply(entry.steps, probe, destinations)]
    except ValueError as error:
        raise PortError(f"weights: {entry}: {error}" + (f"; {add_hint}" if summed else "")) from None
    if len(results) != len(destinations):
        hint = f"split({len(destinations)})?" if len(results) == 1 else "concat()?"
        if summed:
            hint = add_hint
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
