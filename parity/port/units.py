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
from parity.port.trees import path_name
from parity.port.weights import torch_ties

TableRow = tuple[Any, ...]


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


ROLES = {  # HF's attention projections, each its own Linear, by the names the zoo gives them
    "query": ("q_proj", "q", "query", "q_lin", "wq"),
    "key": ("k_proj", "k", "key", "k_lin", "wk"),
    "value": ("v_proj", "v", "value", "v_lin", "wv"),
    "out": ("o_proj", "out_proj", "o", "out", "out_lin", "wo"),
}


def attention_roles(module: Any) -> dict[str, str] | None:
    """A module holding separate query, key, value and out Linears as its own children (HF's attention: `q_proj`,
    `k_proj`, `v_proj`, `o_proj`): role -> child name; else None."""
    from torch import nn

    children = {name: child for name, child in module.named_children() if isinstance(child, nn.Linear)}
    roles = {role: next((n for n in names if n in children), None) for role, names in ROLES.items()}
    return None if None in roles.values() else roles  # type: ignore[return-value]


def torch_family(module: Any) -> str | None:
    from torch import nn

    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        return "linear"  # HF's Conv1D (GPT-2): a Linear whose weight is already [in, out]
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


def torch_units(model: Any, split_attention: bool = False) -> list[Unit]:
    """The torch model's units in registration order (an LSTM's layers and directions each one unit). With
    `split_attention` (the Flax side has `nnx.MultiHeadAttention`), a module holding separate q, k, v and o
    Linears is one attention unit."""
    ties = torch_ties(model)  # a tied name (`lm_head.weight`) is its first name's tensor: one unit holds it
    state = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items() if name not in ties}
    units: list[Unit] = []
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(f"{name}.".startswith(prefix) for prefix in inside):
            continue
        family, prefix = torch_family(module), f"{name}." if name else ""
        roles = attention_roles(module) if split_attention and family is None else None
        if roles:
            tensors = {n: s for n, s in state.items() if any(n.startswith(f"{prefix}{c}.") for c in roles.values())}
            units.append(Unit("attention", name, tensors, len(units), roles, "split"))
            inside += [f"{prefix}{child}." for child in roles.values()]
        own = {
            f"{prefix}{n}" for n, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        } & set(state)  # not a non-persistent buffer (rotary frequencies), nor a tied name
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
            if tensors:  # a Linear whose weight is tied to an embedding holds nothing of its own
                units.append(Unit(family, name, tensors, len(units), module, type(module).__name__))
        else:
            for tensor in sorted(own, key=list(state).index):
                units.append(Unit("tensor", tensor, {tensor: state[tensor]}, len(units), None, "tensor"))
    return units


def flax_family(module: Any) -> str | None:
    from flax import nnx

    for family, kind in (
        ("linear", nnx.Linear),
        ("linear", nnx.Einsum),  # a Linear whose kernel keeps its output axis split ([W, heads, head_dim])
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
