"""A declared port's weights: each model's by name, the two conversions through the table, each model loaded
with them (one tensor, or one table entry, at a time), and the start weights every check begins from.

A check holds one framework's model in one dtype at a time: float32's, then float64's (a large model's two
copies in both dtypes at once would double the memory a check needs); a streaming check holds float32 alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from parity.compare import Weights, noisy_weights
from parity.port import transforms
from parity.port.building import build
from parity.port.declare import Entry, Port
from parity.port.transforms import Shape
from parity.port.trees import path_name, to_jax

if TYPE_CHECKING:
    import torch
    from flax import nnx


def flax_variables(model: nnx.Module) -> dict[str, Any]:
    """Flax variable path ("layers.0.attention.query.kernel", "bn.mean") -> its nnx.Variable: parameters,
    batch statistics and variables of the model's own types; not the random-number state (nnx.RngState)."""
    from flax import nnx

    state = nnx.state(model, nnx.Not(nnx.RngState))
    return {path_name(path): variable for path, variable in nnx.to_flat_state(state)}


def flax_types(model: nnx.Module) -> dict[str, str]:
    """Flax variable path -> "Param" for an nnx.Param (or a subclass), else its type's name ("BatchStat")."""
    from flax import nnx

    return {
        name: "Param" if isinstance(variable, nnx.Param) else type(variable).__name__
        for name, variable in flax_variables(model).items()
    }


def flax_weights(model: nnx.Module) -> Weights:
    """Every Flax variable (parameters and statistics) as a NumPy array, by path."""
    return {name: np.asarray(variable.get_value()) for name, variable in flax_variables(model).items()}


def torch_weights(model: torch.nn.Module, names: Collection[str] | None = None) -> Weights:
    """Every entry of the state_dict (parameters and buffers), or those in `names`, as a NumPy array (a copy);
    each read as it is held (`keep_vars`), so that under `torch_runner.widened` no float64 copy is made."""
    held = model.state_dict(keep_vars=True)
    return {n: t.detach().cpu().numpy().copy() for n, t in held.items() if names is None or n in names}


def torch_buffers(model: torch.nn.Module) -> frozenset[str]:
    """The state_dict entries that are buffers (running statistics, counters), not parameters (a tied
    parameter's second name, `lm_head.weight`, is a parameter too)."""
    return frozenset(model.state_dict()) - {name for name, _ in model.named_parameters(remove_duplicate=False)}


def torch_ties(model: torch.nn.Module) -> dict[str, str]:
    """Tied tensors: each state_dict name that holds the same tensor as an earlier name -> that first name
    (`{"lm_head.weight": "transformer.wte.weight"}`). torch loads and trains them as one tensor."""
    first: dict[int, str] = {}
    ties = {}
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    state = model.state_dict(keep_vars=True)
    for name, tensor in named:
        if name not in state:
            continue  # a non-persistent buffer (rotary frequencies): not in the state_dict, not ported
        if id(tensor) in first:
            ties[name] = first[id(tensor)]
        else:
            first[id(tensor)] = name
    return ties


def tied_together(weights: Weights, ties: dict[str, str]) -> Weights:
    """`weights` with each tied name holding its first name's array: one tensor, one value."""
    return {
        name: weights[ties[name]] if name in ties and ties[name] in weights else array
        for name, array in weights.items()
    }


def flax_shapes(model: nnx.Module) -> dict[str, Shape]:
    """Every Flax parameter's shape, by path (nothing copied)."""
    return {name: tuple(variable.get_value().shape) for name, variable in flax_variables(model).items()}


# ---- conversions ----------------------------------------------------------------------------------------


def to_flax(
    entries: Sequence[Entry], weights: Mapping[str, np.ndarray], flax_shapes: dict[str, Shape], gradients: bool = False
) -> Weights:
    """PyTorch-layout weights (state_dict names) -> Flax variables (paths), through the table. With
    `gradients`, the arrays are loss gradients (a summed entry's gradient is each term's, not their sum)."""
    out: Weights = {}
    for entry in entries:
        targets = [flax_shapes[path] for path in entry.flax]
        arrays = transforms.apply(entry.steps, [weights[name] for name in entry.torch], targets, gradients)
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
    held = model.state_dict(keep_vars=True)
    if set(held) != set(weights) or any(tuple(held[n].shape) != np.shape(a) for n, a in weights.items()):
        model.load_state_dict({name: torch.from_numpy(np.array(array)) for name, array in weights.items()})
    with torch.no_grad():  # one tensor at a time: no second copy of the whole model on the way in
        for name, array in weights.items():
            held[name].copy_(torch.from_numpy(np.array(array)))
    return model


def load_flax_entries(
    model: nnx.Module, entries: Sequence[Entry], weights: Mapping[str, np.ndarray], narrow: bool = False
) -> nnx.Module:
    """`model` holding `weights` (PyTorch layout) converted through the table one entry at a time: no second
    copy of the whole model on the way in. `narrow`: a float64 result that float32 holds exactly is kept in
    float32 (a streaming run: a summed bias stays float64, every other weight float32)."""
    variables, shapes = flax_variables(model), flax_shapes(model)
    for entry in entries:
        for path, array in to_flax([entry], weights, shapes).items():
            if narrow and array.dtype == np.float64 and np.array_equal(small := array.astype(np.float32), array):
                array = small
            variables[path].set_value(to_jax(array))
    return model


def load_flax(model: nnx.Module, weights: Weights) -> nnx.Module:
    """`model` holding `weights` (Flax paths), each set in its own dtype; a variable not in `weights` (declared
    not ported) keeps its own value."""
    for path, variable in flax_variables(model).items():
        if path in weights:
            variable.set_value(to_jax(weights[path]))
    return model


def torch_dropouts(model: Any) -> list[str]:
    """The model's dropout that is on (`encoder.dropout: Dropout(p=0.1)`): train mode cannot be compared with it."""
    from torch import nn

    found = []
    for name, module in model.named_modules():
        rate = module.p if isinstance(module, nn.modules.dropout._DropoutNd) else getattr(module, "dropout", 0.0)
        if isinstance(rate, float) and rate > 0:
            found.append(f"{name or '(top)'}: {type(module).__name__}(p={rate:g})")
    return found


def flax_dropouts(model: Any) -> list[str]:
    """The Flax model's dropout that is on (`layers.0.dropout: Dropout(rate=0.1)`)."""
    from flax import nnx

    found = []
    for path, module in nnx.iter_modules(model):
        rate = getattr(module, "rate", None) if type(module).__name__ == "Dropout" else None
        rate = getattr(module, "dropout_rate", rate)
        if isinstance(rate, float) and rate > 0:
            found.append(f"{path_name(path) or '(top)'}: {type(module).__name__}(rate={rate:g})")
    return found


@dataclasses.dataclass(frozen=True)
class Start:
    """What one build of the torch model tells every check: the start weights, which are buffers, the active
    dropout layers, the `nn.GRU` modules, the tied names."""

    weights: Weights
    buffers: frozenset[str]
    dropouts: list[str]
    grus: list[str]
    ties: dict[str, str]


def torch_start(port: Port, seed: int = 0, probe: Callable[[Any], None] | None = None) -> Start:
    """The weights every check starts from (the torch model's own initialisation, seeded, plus noise; float32)
    and what else the torch model's build says (`Start`). The noise is drawn per tensor, not
    per name: tied names hold one value, as in torch. `probe`: called with that model once its weights are read
    (`arguments.probe_torch`: the inputs and labels tried on it before any check runs)."""
    import torch

    torch.manual_seed(seed)
    model = build(port.torch_model, "float32")
    grus = [name for name, module in model.named_modules() if isinstance(module, torch.nn.GRU)]
    ties = torch_ties(model)
    weights = tied_together(noisy_weights(torch_weights(model), seed), ties)
    start = Start(weights, torch_buffers(model), torch_dropouts(model), grus, ties)
    if probe is not None:
        probe(model)
    return start


def one_way_start(entries: Sequence[Entry], weights: Weights, flax_shapes: dict[str, Shape]) -> Weights:
    """`weights` with every one-way (summed) entry taken through Flax and back: the sum in its first tensor,
    zeros in the rest. The same function; the form in which torch trains as Flax does (`frozen_terms`)."""
    out = dict(weights)
    for entry in entries:
        if transforms.one_way(entry.steps):
            torch_shapes = {name: weights[name].shape for name in entry.torch}
            out.update(to_torch([entry], to_flax([entry], weights, flax_shapes), torch_shapes))
    return out


def frozen_terms(entries: Sequence[Entry]) -> list[str]:
    """The torch tensors a summed entry holds at zero while torch trains: each sum's terms after the first.
    (Trained apart, PyTorch's b_ih and b_hh move their sum twice as far as Flax's one bias moves.)"""
    return [name for entry in entries if transforms.one_way(entry.steps) for name in entry.torch[1:]]


class Widening(Mapping[str, np.ndarray]):
    """`weights` seen in `dtype`, each float array converted when it is read (a streaming float64 run reads
    float32 weights this way: one tensor's float64 copy at a time, not a whole model's)."""

    def __init__(self, weights: Weights, dtype: str) -> None:
        self.weights, self.dtype = weights, dtype

    def __getitem__(self, name: str) -> np.ndarray:
        array = self.weights[name]
        return array.astype(self.dtype) if np.issubdtype(array.dtype, np.floating) else array

    def __iter__(self) -> Iterator[str]:
        return iter(self.weights)

    def __len__(self) -> int:
        return len(self.weights)


def as_dtype(weights: Weights, dtype: str) -> Weights:
    """Every float array in `dtype`; integer arrays (counters) kept."""
    return {
        name: array.astype(dtype) if np.issubdtype(array.dtype, np.floating) else array
        for name, array in weights.items()
    }
