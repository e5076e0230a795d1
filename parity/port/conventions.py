"""The conventions `infer_port` knows: for a PyTorch unit and a Flax unit of one family, every weight table
that fits their shapes, the usual one first.

Linear: `weight` transposed into `kernel` (or, for a Linear reading a flattened NCHW map, its input features
reordered to NHWC). Conv: OIHW -> HWIO (any rank). LayerNorm, BatchNorm: `weight` is `scale`, running
statistics are `mean` and `var`. Embedding: `weight` is `embedding`. MultiheadAttention: the packed q/k/v
rows split, transposed and reshaped to `[width, heads, head_dim]`, the output projection to `[heads, head_dim,
width]`. LSTM/GRU/RNN, one layer and direction: gate by gate onto `nnx.LSTMCell`'s eight Linear layers, or
stacked onto `dense_i`/`dense_h`, the two biases summed (`add()`) where the cell keeps one. A lone tensor:
as it is, or transposed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from parity.port import transforms
from parity.port.declare import Entry, PortError, check_entry_shapes, matching, parse_entry
from parity.port.transforms import Step, add, permute, reshape, split, transpose
from parity.port.units import TableRow, Unit


def conventions(source: Unit, target: Unit, flattened: Sequence[tuple[int, ...]] = ()) -> list[list[TableRow]]:
    """Every table that converts `source` into `target` and fits their shapes, the usual one first; [] when
    none does. `flattened`: the (channels, height, width) of feature maps a Linear may read flattened."""
    if source.family != target.family:
        return []
    make = BUILDERS[source.family]
    return [rows for rows in make(source, target, flattened) if fits(rows, source, target)]


def fits(rows: list[TableRow], source: Unit, target: Unit) -> bool:
    """Every tensor of both units mapped once, every shape right (`check_entry_shapes`)."""
    entries = [parse_entry(row) for row in rows]
    torch_names = [name for entry in entries for name in entry.torch]
    flax_paths = [path for entry in entries for path in entry.flax]
    wanted = {n for n in source.tensors if not n.endswith("num_batches_tracked")}
    if sorted(torch_names) != sorted(wanted) or sorted(flax_paths) != sorted(target.tensors):
        return False
    try:
        for entry in entries:
            shape_check(entry, source, target)
    except PortError:
        return False
    return True


def shape_check(entry: Entry, source: Unit, target: Unit) -> None:
    check_entry_shapes(entry, [source.tensors[n] for n in entry.torch], [target.tensors[p] for p in entry.flax])


def name(unit: Unit, suffix: str) -> str:
    return f"{unit.path}.{suffix}" if unit.path else suffix


def optional(source: Unit, target: Unit, torch_suffix: str, flax_suffix: str) -> list[TableRow]:
    """A row for a tensor both units may lack (a bias); [] when neither has it."""
    t, f = name(source, torch_suffix), name(target, flax_suffix)
    return [(t, f)] if t in source.tensors or f in target.tensors else []


def linear(source: Unit, target: Unit, flattened: Sequence[tuple[int, ...]]) -> list[list[TableRow]]:
    bias = optional(source, target, "bias", "bias")
    weight, kernel = name(source, "weight"), name(target, "kernel")
    if target.kind == "Einsum":  # nnx.Einsum: [in, out] with the out axis split (or [heads, head_dim, out])
        einsum_bias = [(name(source, "bias"), name(target, "bias"), reshape())] if bias else []
        return [[(weight, kernel, transpose(), reshape()), *einsum_bias]]
    if source.kind == "Conv1D":  # HF's Conv1D keeps [in, out]: as it is (a square one transposed still fits)
        return [[(weight, kernel), *bias], [(weight, kernel, transpose()), *bias]]
    tables = [[(weight, kernel, transpose()), *bias]]
    out, features = source.tensors[weight]
    for channels, height, width in flattened:  # NCHW flattened in torch, NHWC in Flax
        if channels * height * width == features:
            steps = (reshape(out, channels, height, width), permute(2, 3, 1, 0), reshape())
            tables.append([(weight, kernel, *steps), *bias])
    return tables


def conv(source: Unit, target: Unit, _: Any) -> list[list[TableRow]]:
    rank = len(source.tensors[name(source, "weight")])
    steps = permute(*range(2, rank), 1, 0)  # O, I, *window -> *window, I, O
    return [[(name(source, "weight"), name(target, "kernel"), steps), *optional(source, target, "bias", "bias")]]


def norm(source: Unit, target: Unit, _: Any) -> list[list[TableRow]]:
    rows = [*optional(source, target, "weight", "scale"), *optional(source, target, "bias", "bias")]
    if source.family == "batchnorm":
        rows += [*optional(source, target, "running_mean", "mean"), *optional(source, target, "running_var", "var")]
    return [rows]


def embedding(source: Unit, target: Unit, _: Any) -> list[list[TableRow]]:
    return [[(name(source, "weight"), name(target, "embedding"))]]


def attention(source: Unit, target: Unit, _: Any) -> list[list[TableRow]]:
    """PyTorch's packed q, k, v rows onto Flax's three `[width, heads, head_dim]` projections; or HF's separate
    q, k, v, o Linears (`source.module`: role -> child name), each transposed and reshaped."""
    qkv = ("query", "key", "value")
    if source.kind == "split":
        split_rows: list[TableRow] = []
        for role, child in source.module.items():
            weight, bias = name(source, f"{child}.weight"), name(source, f"{child}.bias")
            split_rows.append((weight, name(target, f"{role}.kernel"), transpose(), reshape()))
            if bias in source.tensors or name(target, f"{role}.bias") in target.tensors:
                split_rows.append((bias, name(target, f"{role}.bias"), *([] if role == "out" else [reshape()])))
        return [split_rows]
    rows: list[TableRow] = [
        (
            name(source, "in_proj_weight"),
            tuple(name(target, f"{p}.kernel") for p in qkv),
            split(3),
            transpose(),
            reshape(),
        )
    ]
    if name(source, "in_proj_bias") in source.tensors:
        rows.append((name(source, "in_proj_bias"), tuple(name(target, f"{p}.bias") for p in qkv), split(3), reshape()))
    rows.append((name(source, "out_proj.weight"), name(target, "out.kernel"), transpose(), reshape()))
    return [rows + optional(source, target, "out_proj.bias", "out.bias")]


def recurrent(source: Unit, target: Unit, _: Any) -> list[list[TableRow]]:
    """One layer and direction of nn.LSTM/GRU/RNN onto a Flax cell: gate by gate (nnx.LSTMCell's `ii`..`ho`)
    or stacked (`dense_i`, `dense_h`: OptimizedLSTMCell, GRUCell, SimpleCell and cells like them)."""
    suffix = f"_l{source.layer}{'_reverse' if source.reverse else ''}"
    module = source.path.rsplit(".", 1)[0]
    t = {kind: f"{module}.{kind}{suffix}" for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    biases = [t["bias_ih"], t["bias_hh"]] if t["bias_ih"] in source.tensors else []
    gates = ("i", "f", "g", "o")
    if name(target, "ii.kernel") in target.tensors and source.kind == "lstm":
        rows: list[TableRow] = [
            (
                t["weight_ih"],
                tuple(name(target, f"i{'f_' if g == 'f' else g}.kernel") for g in gates),
                split(4),
                transpose(),
            ),
            (t["weight_hh"], tuple(name(target, f"h{g}.kernel") for g in gates), split(4), transpose()),
        ]
        held = [name(target, f"{side}{g}.bias") for side in ("h", "i") for g in gates]
        held = [path for path in held if path in target.tensors]
        if biases and len(held) == 4:
            rows.append((tuple(biases), tuple(held), add(), split(4)))
        return [rows]
    rows = [
        (t["weight_ih"], name(target, "dense_i.kernel"), transpose()),
        (t["weight_hh"], name(target, "dense_h.kernel"), transpose()),
    ]
    held = [path for path in (name(target, "dense_i.bias"), name(target, "dense_h.bias")) if path in target.tensors]
    if biases and len(held) == 2:
        rows += [(biases[0], held[0]), (biases[1], held[1])]
    elif biases and len(held) == 1:
        rows.append((tuple(biases), held[0], add()))
    return [rows]


def tensor(source: Unit, target: Unit, _: Any) -> list[list[TableRow]]:
    """A lone tensor: as it is, or transposed (a square matrix: both, decided in float64)."""
    (t, shape), (f, other) = next(iter(source.tensors.items())), next(iter(target.tensors.items()))
    tables: list[list[TableRow]] = [[(t, f)]] if shape == other else []
    if len(shape) == 2 and shape[::-1] == other:
        tables.append([(t, f, transpose())])
    return tables


BUILDERS = {
    "linear": linear,
    "conv": conv,
    "layernorm": norm,
    "batchnorm": norm,
    "embedding": embedding,
    "attention": attention,
    "recurrent": recurrent,
    "tensor": tensor,
}


def layout(unit: Unit) -> tuple[Step, ...]:
    """The steps from a torch unit's output to the Flax layout: channels last for a convolution's or a
    BatchNorm's maps (NCHW -> NHWC), nothing otherwise."""
    if unit.family == "conv":
        rank = len(next(iter(unit.tensors.values())))
    elif unit.family == "batchnorm":
        rank = {"BatchNorm2d": 4, "BatchNorm3d": 5}.get(unit.kind, 0)
    else:
        return ()
    return (permute(0, *range(2, rank), 1),) if rank >= 3 else ()


def notes(source: Unit, target: Unit) -> list[str]:
    """What the weights cannot show: a BatchNorm's momentum (PyTorch's m is Flax's 1 - m) and a norm's epsilon."""
    found = []
    if source.family == "batchnorm":
        momentum, flax_momentum = source.module.momentum, getattr(target.module, "momentum", None)
        if momentum is None:
            found.append(f"{source.path}: momentum=None (a cumulative average) has no Flax counterpart")
        elif flax_momentum is not None and not math.isclose(1 - momentum, flax_momentum, abs_tol=1e-9):
            found.append(
                f"{source.path}: torch momentum {momentum:g} is Flax momentum {1 - momentum:g}, but {target.path} "
                f"has {flax_momentum:g} (train mode will diverge)"
            )
        else:
            found.append(f"momentum: torch {momentum:g} = Flax {flax_momentum:g} (Flax weighs the running value)")
    if source.family in ("batchnorm", "layernorm"):
        epsilon, flax_epsilon = source.module.eps, getattr(target.module, "epsilon", None)
        if flax_epsilon is not None and not math.isclose(epsilon, flax_epsilon):
            found.append(f"{source.path}: torch eps {epsilon:g}, but {target.path} has epsilon {flax_epsilon:g}")
    return found


def check_gru_biases(entries: list[Entry], grus: list[str], names: list[str], not_ported: Sequence[str]) -> None:
    """nn.GRU's `bias_hh` cannot be summed into an input bias (nnx.GRUCell's form): PortError, in one line."""
    for gru in grus:
        prefix = f"{gru}.bias_hh" if gru else "bias_hh"
        for name in [n for n in names if n.startswith(prefix)]:
            entry = next((e for e in entries if name in e.torch), None)
            if (entry is None and not matching(not_ported, [name])) or (entry and transforms.one_way(entry.steps)):
                raise PortError(
                    f"weights: {name}: nn.GRU keeps b_hn inside r * (W_hn h + b_hn), which nnx.GRUCell (one bias, "
                    "outside) cannot hold: no table ports it exactly unless that block is zero; write the Flax cell "
                    "in PyTorch's form, or declare it not_ported to check a port from weights with b_hn = 0"
                )
