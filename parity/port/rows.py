"""The rows of a port check's comparisons: outputs leaf by leaf, buffers after a forward pass, the weight
round trips, submodule by submodule. Each verdict is `parity.compare`'s; float64 outputs are held to 1e-12
relative to max(1, the largest value), as float32's are to 1e-5."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from parity import compare
from parity.compare import Row, Weights
from parity.port import transforms
from parity.port.declare import Port, PortError, module_of
from parity.port.trees import same_values
from parity.port.weights import flax_variables, to_flax, to_torch

if TYPE_CHECKING:
    from parity.port.table import Declared
    from parity.port.torch_runner import Lowered


def template(port: Port, dtype: str, check: str, case: str = "") -> Row:
    return Row(port.name, check, case, "cpu", dtype, "torch vs jax", {}, "", None)


def judged_as(dtype: str, lowered: Lowered | None) -> str:
    """The dtype whose tolerance judges a row: float32's where torch computed part of a float64 run in it."""
    return "float32" if dtype == "float64" and lowered and lowered.modules else dtype


def as_run(row: Row, dtype: str, lowered: Lowered | None) -> Row:
    """A row judged at `judged_as`'s tolerance, back under its run's dtype, saying why."""
    if row.dtype == dtype or lowered is None:
        return row
    said = f"judged at {row.dtype}'s tolerance: torch computed {', '.join(list(lowered.modules)[:2])} in {row.dtype}"
    return dataclasses.replace(row, dtype=dtype, detail="; ".join(part for part in (said, row.detail) if part))


def lowered_rows(port: Port, lowered: Lowered | None) -> list[Row]:
    """One unjudged row naming what torch computed below float64 in a float64 run (HF's RMSNorm, rotary)."""
    if not lowered or not lowered.modules:
        return []
    modules = ", ".join(f"{module} in {dtype}" for module, dtype in list(lowered.modules.items())[:4])
    more = f" and {len(lowered.modules) - 4} more" if len(lowered.modules) > 4 else ""
    return [
        dataclasses.replace(
            template(port, "float64", "precision", "torch below float64"),
            tolerance="-",
            detail=f"torch computed {modules}{more}: what follows is judged at float32's tolerance",
        )
    ]


def output_rows(
    port: Port,
    torch_outputs: list[tuple[str, np.ndarray]],
    flax_outputs: list[tuple[str, np.ndarray]],
    dtype: str,
    lowered: Lowered | None = None,
) -> list[Row]:
    """Each output array (torch's in the Flax layout, `TorchResults.outputs`) against Flax's of the same name (a
    float64 run computing in float32 is refused; one that torch computed partly in float32 is judged at
    float32's tolerance)."""
    count = len(next(iter(torch_outputs))[1]) if torch_outputs else 0
    flax_by_name = dict(flax_outputs)
    if [name for name, _ in torch_outputs] != [name for name, _ in flax_outputs]:
        row = dataclasses.replace(template(port, dtype, "outputs", "structure"), tolerance="same arrays", passed=False)
        names = [", ".join(name for name, _ in side) for side in (torch_outputs, flax_outputs)]
        hint = "; pick the arrays to compare: Port(torch_forward=lambda model, *x: model(*x).logits) or flax_forward"
        return [dataclasses.replace(row, detail=f"torch returns {names[0]}; Flax returns {names[1]}{hint}")]
    rows = []
    for name, output in torch_outputs:
        other = flax_by_name[name]
        if dtype == "float64" and other.dtype == np.float32:
            raise PortError(
                f"{port.name}: the Flax model computes in {other.dtype} with float64 weights and inputs; "
                "leave its modules' dtype unset (None) so that float64 runs in float64"
            )
        case = f"{count} inputs" if len(torch_outputs) == 1 and name == "output" else f"{name}, {count} inputs"
        row = template(port, judged_as(dtype, lowered), "outputs", case)
        rows.append(as_run(compare.compare_outputs(row, output, other, float64_relative=True), dtype, lowered))
    return rows


def buffer_rows(table: Declared, torch_buffers: Weights, flax_held: Weights, dtype: str) -> list[Row]:
    """Train mode: each module's buffers after one forward pass (the running statistics' update), per module."""
    modules: dict[str, list[str]] = {}
    for entry in table.buffer_entries:
        for path in entry.flax:
            modules.setdefault(module_of(entry.torch[0]), []).append(path)
    rows = []
    for module, paths in modules.items():
        reference = np.concatenate([torch_buffers[path].ravel() for path in paths])
        other = np.concatenate([flax_held[path].ravel() for path in paths])
        names = ", ".join(path.rsplit(".", 1)[-1] for path in paths)
        case = f"{module} (flax {module_of(paths[0])}): {names} after a forward"
        row = template(table.port, dtype, "buffers", case)
        rows.append(compare.compare_outputs(row, reference, other, float64_relative=True))
    return rows


def weight_rows(table: Declared, weights: Mapping[str, np.ndarray], flax_model: Any, dtype: str) -> list[Row]:
    """Both conversions through the table, each round trip exact (every value, bit for bit), one entry at a time;
    a summed entry (one-way) only Flax -> torch -> Flax."""
    held = flax_variables(flax_model)
    torch_exact = flax_exact = loaded_exact = True
    one_way = []
    for entry in table.entries:
        flax = to_flax([entry], weights, table.flax_shapes)
        back = to_torch([entry], flax, table.torch_shapes)
        again = to_flax([entry], back, table.flax_shapes)
        if transforms.one_way(entry.steps):
            one_way.append(str(entry))
        else:
            torch_exact &= all(
                np.array_equal(weights[n], back[n]) and weights[n].shape == back[n].shape for n in entry.torch
            )
        flax_exact &= all(np.array_equal(flax[p], again[p]) for p in entry.flax)
        loaded_exact &= all(np.array_equal(flax[p], np.asarray(held[p].get_value())) for p in entry.flax)
    count = f"{len(table.torch_shapes) - len(table.not_ported)} torch tensors, {len(table.entries)} entries"
    if table.ties:
        twin, first = next(iter(table.ties.items()))
        count += f"; tied (one tensor): {twin} is {first}" + (
            f" and {len(table.ties) - 1} more" if len(table.ties) > 1 else ""
        )
    if one_way:
        count += f"; one-way (a sum: the function kept, not the terms): {len(one_way)} entries, e.g. {one_way[0]}"
    row = dataclasses.replace(template(table.port, dtype, "weights"), compared="round trip", tolerance="exact")
    return [
        dataclasses.replace(row, case="torch -> flax -> torch", passed=torch_exact, detail=count),
        dataclasses.replace(
            row,
            case="flax -> torch -> flax",
            passed=flax_exact and loaded_exact,
            detail="and the Flax model holds them" if loaded_exact else "the Flax model holds other values",
        ),
    ]


def submodule_rows(
    port: Port,
    torch_calls: list[tuple[str, str, np.ndarray]],
    flax_calls: dict[str, list[np.ndarray]],
    dtype: str,
    lowered: Lowered | None = None,
) -> list[Row]:
    """Each declared submodule's outputs (torch's as `TorchResults.submodules` holds them: module, Flax path, output
    in the Flax layout), in the order PyTorch ran them; in a float64 run, those that finished after torch first
    computed below float64 are judged at float32's tolerance."""
    seen: dict[str, int] = {}
    rows = []
    for index, (name, path, reference) in enumerate(torch_calls):
        after = lowered if lowered and lowered.before is not None and index >= lowered.before else None
        call = seen.get(name, 0)
        seen[name] = call + 1
        flax_outputs = flax_calls.get(path, [])
        row = template(
            port,
            judged_as(dtype, after),
            "submodules",
            f"{name} (flax {path})" + (f", call {call + 1}" if call else ""),
        )
        if call >= len(flax_outputs):
            ran = f"flax {path} ran {len(flax_outputs)} times, torch {name} at least {call + 1}"
            rows.append(as_run(dataclasses.replace(row, tolerance="-", passed=False, detail=ran), dtype, after))
            continue
        other = flax_outputs[call]
        if reference.shape != other.shape and same_values(reference.shape, other.shape):
            reference = reference.reshape(other.shape)  # [1, T, W] for [T, W]; [B, T, W] for [B, T, heads, head_dim]
        rows.append(as_run(compare.compare_outputs(row, reference, other, float64_relative=True), dtype, after))
    missing = [e.torch[0] for e in port.submodule_entries if e.torch[0] not in seen]
    if missing:
        row = template(port, dtype, "submodules", ", ".join(missing))
        rows.append(dataclasses.replace(row, tolerance="-", passed=False, detail="declared, but torch never ran them"))
    return rows


def gradient_row(
    port: Port,
    dtype: str,
    torch_side: tuple[float, Weights],
    flax_side: tuple[float, Weights],
    rounding: dict[str, float] | None = None,
    lowered: Lowered | None = None,
) -> Row:
    """Every parameter's gradient of the loss (torch's by Flax path), relative to that tensor's largest."""
    (loss, gradients), (flax_loss, flax_gradients) = torch_side, flax_side
    row = template(port, judged_as(dtype, lowered), "gradients", f"{len(flax_gradients)} parameters")
    row.detail = f"loss {loss:.6g} vs {flax_loss:.6g}"
    return as_run(compare.compare_gradients(row, gradients, flax_gradients, rounding), dtype, lowered)
