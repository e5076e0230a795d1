"""The units `infer_port` pairs: each model cut into the layers whose weights convert together, and the
tables that convert one into the other (`parity.port.conventions`).

A unit is a layer of a known family (`Linear`, `Conv*`, `LayerNorm`, `BatchNorm*`, `Embedding`,
`MultiheadAttention` with its packed projection, one layer and direction of an `LSTM`/`GRU`/`RNN`), or a
lone tensor held by a module of no known family (a learned position table). On the Flax side the same
families: `nnx.Linear`, `nnx.Conv`, `nnx.LayerNorm`, `nnx.BatchNorm`, `nnx.Embed`, `nnx.MultiHeadAttention`
(its query, key, value and out projections inside it) and any `nnx.RNNCellBase` (its Linear layers inside
it).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from parity.port.transforms import Shape
from parity.port.weights import path_name

Row = tuple[Any, ...]


@dataclasses.dataclass
class Unit:
    """One layer (or lone tensor) of one side: its family, its path, and its tensors' names and shapes."""

    family: str  # linear, conv, layernorm, batchnorm, embedding, attention, recurrent, tensor
    path: str  # torch module name (a recurrent unit: "lstm.l1_reverse"), or Flax module path
    tensors: dict[str, Shape]  # full name -> shape
    order: int  # registration order (torch), sorted path order (Flax)
    module: Any = None  # the module itself (hyperparameters: momentum, epsilon, kernel size)
    kind: str = ""  # the class name; a recurrent unit's cell (lstm, gru, rnn), a tensor's variable type
    layer: int = 0  # recurrent: the layer, and whether it is the reverse direction
    reverse: bool = False

    def __str__(self) -> str:
        return f"{self.path or '(top)'} ({self.kind})"


def torch_family(module: Any) -> str | None:
    from torch import nn

    for family, kinds in (
        ("linear", (nn.Linear,)),
        ("conv", (nn.Conv1d, nn.Conv2d, nn.Conv3d)),
        ("layernorm", (nn.LayerNorm,)),
        ("batchnorm", (nn.modules.batchnorm._BatchNorm,)),
        ("embedding", (nn.Embedding,)),
        ("attention", (nn.MultiheadAttention,)),
        ("recurrent", (nn.LSTM, nn.GRU, nn.RNN)),
    ):
        if isinstance(module, kinds):
            return family
    return None


def torch_units(model: Any) -> list[Unit]:
    """The torch model's units in registration order (an LSTM's layers and directions each one unit)."""
    state = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    units: list[Unit] = []
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in inside):
            continue
        family, prefix = torch_family(module), f"{name}." if name else ""
        own = {
            f"{prefix}{n}" for n, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        }
        if family in ("attention", "recurrent"):
            inside.append(prefix)
        if family == "recurrent":
            cell = type(module).__name__.lower()
            for layer in range(module.num_layers):
                for reverse in (False, True) if module.bidirectional else (False,):
                    suffix = f"_l{layer}{'_reverse' if reverse else ''}"
                    tensors = {n: s for n, s in state.items() if n.startswith(prefix) and n.endswith(suffix)}
                    path = f"{name}.l{layer}{'_reverse' if reverse else ''}"
                    units.append(Unit(family, path, tensors, len(units), module, cell, layer, reverse))
        elif family is not None:
            tensors = {n: s for n, s in state.items() if n.startswith(prefix)}
            units.append(Unit(family, name, tensors, len(units), module, type(module).__name__))
        else:
            for tensor in sorted(own, key=list(state).index):
                units.append(Unit("tensor", tensor, {tensor: state[tensor]}, len(units), None, "tensor"))
    return units


def flax_family(module: Any) -> str | None:
    from flax import nnx

    for family, kind in (
        ("linear", nnx.Linear),
        ("conv", nnx.Conv),
        ("layernorm", nnx.LayerNorm),
        ("batchnorm", nnx.BatchNorm),
        ("embedding", nnx.Embed),
        ("attention", nnx.MultiHeadAttention),
        ("recurrent", nnx.RNNCellBase),
    ):
        if isinstance(module, kind):
            return family
    return None


def natural(path: str) -> list[Any]:
    """A path's sort key with numbers as numbers (`layers.10` after `layers.9`)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def flax_units(model: Any, shapes: dict[str, Shape], types: dict[str, str]) -> list[Unit]:
    """The Flax model's units, sorted by path (NNX keeps no registration order)."""
    from flax import nnx

    modules = sorted(((path_name(p), m) for p, m in nnx.iter_modules(model)), key=lambda item: natural(item[0]))
    composites = [path for path, m in modules if flax_family(m) in ("attention", "recurrent")]
    claimed: set[str] = set()
    units: list[Unit] = []
    for path, module in modules:
        family = flax_family(module)
        prefix = f"{path}." if path else ""
        if family is None or any(path.startswith(f"{c}.") for c in composites):
            continue
        tensors = {n: s for n, s in shapes.items() if n.startswith(prefix)}
        if family not in ("attention", "recurrent"):
            tensors = {n: s for n, s in tensors.items() if "." not in n[len(prefix) :]}
        claimed.update(tensors)
        units.append(Unit(family, path, tensors, 0, module, type(module).__name__, *cell_position(path)))
    for name in sorted(set(shapes) - claimed, key=natural):
        units.append(Unit("tensor", name, {name: shapes[name]}, 0, None, types.get(name, "Param")))
    units.sort(key=lambda unit: natural(unit.path))
    for index, unit in enumerate(units):
        unit.order = index
    return units


def cell_position(path: str) -> tuple[int, bool]:
    """A Flax cell's layer (the first number in its path) and direction (`backward` or `reverse` in it)."""
    number = re.search(r"\d+", path)
    return (int(number.group()) if number else 0), bool(re.search(r"backward|reverse", path))
