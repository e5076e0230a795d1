"""Unit-local checks (`checks=(..., "units")`): every declared submodule judged on inputs as exact as torch's,
so one faulty unit does not spoil the verdicts of the units after it, and one run names every faulty unit,
not only the first.

One torch run records each declared submodule's inputs and outputs (`torch_runner.torch_calls`). The Flax model
then runs once with every declared module handing on torch's output of that call in place of its own
(`flax_passes.flax_pass` with `replacing`, one compiled pass): each module runs in its own place in the Flax
model, on what the code before it makes of torch's exact values, and its own output is compared with torch's. A
wrong pairing (torch's `a` onto the Flax layer that runs third) fails there, as a faulty layer does; a faulty one
fails alone. A unit that fails is called once more alone, on torch's inputs to it (each float array of the
output's rank through the row's steps; a Linear reading a flattened NCHW map, through that flatten;
`Port(unit_inputs=)` where neither fits): if it passes so, the fault lies before it, in its parent's own code (an
activation, a residual), and the row says so. When every unit passes but the outputs do not, a row puts the fault
between the units.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from parity import compare
from parity.compare import Row
from parity.port import transforms
from parity.port.declare import Entry, Port, module_of
from parity.port.flax_passes import flax_pass, iter_modules
from parity.port.rows import as_run, judged_as, template
from parity.port.transforms import permute, reshape
from parity.port.trees import first_leaf, same_values, to_jax

if TYPE_CHECKING:
    from parity.port.torch_runner import Lowered, UnitCall


def unit_rows(
    port: Port,
    calls: list[UnitCall],
    model: Any,
    dtype: str,
    inputs: tuple[np.ndarray, ...],
    lowered: Lowered | None = None,
    compiled: bool = True,
) -> list[Row]:
    """One row per call of each declared submodule: the Flax module in its own place in the model, its inputs
    made exact by handing on torch's output in place of every declared module's own, against torch's output."""
    entries = {entry.torch[0]: entry for entry in port.submodule_entries}
    given: dict[str, list[np.ndarray]] = {}
    for call in calls:
        entry = entries[call.name]
        given.setdefault(entry.flax[0], []).append(transforms.apply(entry.steps, [call.output.astype(dtype)], [])[0])
    recorded = flax_pass(port, model, inputs, replacing=given, compiled=compiled)[1]
    seen: dict[str, int] = {}
    rows = []
    for call in calls:
        entry = entries[call.name]
        index = seen.get(entry.flax[0], 0)
        seen[entry.flax[0]] = index + 1
        case = f"{call.name} (flax {entry.flax[0]})" + (f", call {index + 1}" if index else "")
        inside = lowered and any(f"{module}.".startswith(f"{call.name}.") for module in lowered.modules)
        judged = lowered if inside else None  # the unit itself computed below float64 (HF's RMSNorm)
        row = template(port, judged_as(dtype, judged), "units", case)
        ran = recorded.get(entry.flax[0], [])
        if index >= len(ran):
            detail = f"flax {entry.flax[0]} ran {len(ran)} times, torch {call.name} at least {index + 1}"
            rows.append(dataclasses.replace(row, dtype=dtype, tolerance="-", passed=False, detail=detail))
            continue
        reference, other = given[entry.flax[0]][index], ran[index]
        if reference.shape != other.shape and same_values(reference.shape, other.shape):
            reference = reference.reshape(other.shape)
        row = as_run(compare.compare_outputs(row, reference, other, float64_relative=True), dtype, judged)
        if row.passed is False and alone_passes(port, entry, call, model, dtype, reference):
            parent = module_of(call.name)
            where = "the model's own code" if parent == "(top)" else f"{parent}'s own code"
            row.detail += f"; alone on torch's inputs to it, it passes: the fault lies before it, in {where}"
        rows.append(row)
    return rows


def alone_passes(port: Port, entry: Entry, call: UnitCall, model: Any, dtype: str, reference: np.ndarray) -> bool:
    """Whether the Flax module, called alone on torch's inputs to it (converted), gives torch's output."""
    steps, rank = input_steps(port, entry, call.output.ndim)
    try:
        module = dict(iter_modules(model))[entry.flax[0]]
        other = np.asarray(first_leaf(module(*[converted(steps, arg, rank, dtype) for arg in call.args])))
    except Exception:  # other arguments than torch's module takes
        return False
    if other.shape != reference.shape:
        return False
    row = compare.compare_outputs(template(port, dtype, "units"), reference, other, float64_relative=True)
    return bool(row.passed)


def input_steps(port: Port, entry: Entry, rank: int) -> tuple[tuple[Any, ...], int | None]:
    """The steps a unit's float inputs go through, and the rank they apply to (None: every float input): the
    port's `unit_inputs` for it; a flattened NCHW map for a Linear whose table reads one (`reshape(out, C, H, W),
    permute(2, 3, 1, 0), reshape()`); else the row's own output steps, for inputs of the output's rank."""
    name = entry.torch[0]
    if port.unit_inputs and name in port.unit_inputs:
        return tuple(port.unit_inputs[name]), None
    weight = next((e for e in port.entries if f"{name}.weight" in e.torch), None)
    first = weight.steps[0] if weight and weight.steps else None
    if isinstance(first, transforms.Reshape) and first.shape is not None and len(first.shape) == 4:
        _, channels, height, width = first.shape
        steps = (reshape(-1, channels, height, width), permute(0, 2, 3, 1), reshape(-1, channels * height * width))
        return steps, 2
    return entry.steps, rank


def converted(steps: tuple[Any, ...], arg: Any, rank: int | None, dtype: str) -> Any:
    """A torch input in the Flax layout: a float array of the output's rank through the row's steps, in `dtype`."""
    if not isinstance(arg, np.ndarray):
        return arg
    if np.issubdtype(arg.dtype, np.floating):
        arg = arg.astype(dtype)
        if rank is None or arg.ndim == rank:
            arg = transforms.apply(steps, [arg], [])[0]
    return to_jax(arg)


def between_units(rows: list[Row], dtype: str) -> list[Row]:
    """When every unit of `dtype` passes but an output or a submodule does not: one row naming where the fault
    lies, the parent of the first submodule whose output differs (its own code, between the units)."""
    ours = [row for row in rows if row.dtype == dtype]
    units = [row for row in ours if row.check == "units"]
    if not units or any(row.passed is False for row in units):
        return []
    failing = [row for row in ours if row.check in ("submodules", "outputs") and row.passed is False]
    if not failing:
        return []
    first = next((row for row in failing if row.check == "submodules"), failing[0])
    module = first.case.split(" (flax")[0] if first.check == "submodules" else "the model"
    parent = module_of(module) if first.check == "submodules" else "(top)"
    where = "the model's own forward" if parent == "(top)" else f"{parent}'s own forward"
    detail = (
        f"every unit passes on torch's inputs, but {module}'s output differs: the fault lies between the units, "
        f"in {where}"
    )
    return [
        dataclasses.replace(template_of(first), check="units", case="between the units", passed=False, detail=detail)
    ]


def template_of(row: Row) -> Row:
    return dataclasses.replace(row, figures={}, tolerance="-", detail="")
