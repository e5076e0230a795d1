"""Coverage, proved: for each mapped entry, plant the most likely bug for its shape and check that the outputs
or submodules check would have failed on the user's inputs (`check_port(..., coverage=True)`).

The bug planted in an entry, the first that applies:
- the other direction's tensors, for a reverse direction of an LSTM/GRU/RNN (`_reverse`);
- its second term dropped, for a sum (`bias_hh` lost, `bias_ih` alone);
- its first two blocks swapped, for an entry that splits (LSTM gates i and f, attention's q and k);
- transposed, for a square matrix (a Linear kernel of as many inputs as outputs);
- its window transposed, for a convolution kernel with a square window larger than one;
- not loaded (the Flax model's own initial value), for anything else: a bias, a norm's scale, a statistic.
  The initial values are drawn by the model's own initialisers from JAX's `unsafe_rbg` generator (`initial_values`):
  the same distributions and constants as a build with the default threefry keys, without compiling threefry
  for every parameter shape (most of a real build's time on a CPU).
Every planted Flax model runs once, in float64, on the inputs; an entry is covered when an output or a
submodule (in train mode, also a buffer after the forward pass: the running statistics show only there)
then differs beyond its tolerance. The submodules' recording pass runs only for a bug the outputs (and
buffers) did not already catch. An entry that would pass is reported as not covered, with the
bug it would have missed: a head that a mean over tokens makes insensitive, inputs too few or too alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from parity.compare import Row, Weights
from parity.port import flax_passes, flax_runner, transforms
from parity.port.declare import Entry
from parity.port.results import torch_results
from parity.port.rows import buffer_rows, output_rows, submodule_rows, template
from parity.port.weights import as_dtype, flax_weights, load_flax, to_flax

if TYPE_CHECKING:
    from parity.port.table import Declared

Plant = Callable[[Weights, Weights], Weights]  # (torch-layout weights, Flax-layout start) -> planted Flax values


def planted_bug(entry: Entry, weights: Weights, flax: Weights, shapes: dict[str, Any]) -> tuple[str, Plant]:
    """The most likely bug for this entry's shape, in words, and how to plant it."""
    first = entry.torch[0]
    twin = first.replace("_reverse", "")
    if first.endswith("_reverse") and all(n.replace("_reverse", "") in weights for n in entry.torch):
        swapped = {n: weights[n.replace("_reverse", "")] for n in entry.torch}
        return f"the forward direction's {twin}", through(entry, swapped, shapes)
    if transforms.one_way(entry.steps):
        dropped = {n: np.zeros_like(weights[n]) for n in entry.torch[1:]}
        return f"{', '.join(entry.torch[1:])} dropped", through(entry, {**weights, **dropped}, shapes)
    split = next((step for step in entry.steps if isinstance(step, transforms.Split)), None)
    if split is not None:
        order = (1, 0, *range(2, split.parts))
        moved = {n: transforms.ReorderBlocks(order, split.axis).forward([weights[n]], [])[0] for n in entry.torch}
        return f"blocks 1 and 2 of {split.parts} swapped", through(entry, {**weights, **moved}, shapes)
    values = [flax[path] for path in entry.flax]
    if len(values) == 1 and values[0].ndim == 2 and values[0].shape[0] == values[0].shape[1]:
        return "a transposed square matrix", lambda _w, f: {entry.flax[0]: f[entry.flax[0]].T.copy()}
    if len(values) == 1 and values[0].ndim == 4 and values[0].shape[0] == values[0].shape[1] > 1:
        return "its window transposed", lambda _w, f: {entry.flax[0]: np.swapaxes(f[entry.flax[0]], 0, 1).copy()}
    return "not loaded (the Flax model's initial value)", lambda _w, _f: {}


def initial_values(table: Declared) -> Weights:
    """The Flax model's own initial values (float64 build, `table.mode`), its keys made by `unsafe_rbg`: what an
    entry left unloaded holds. Which generator drew them does not change what the planted bug is."""
    import jax

    with jax.default_prng_impl("unsafe_rbg"):
        return flax_weights(flax_runner.flax_model_holding(table.port, [], {}, "float64", table.mode))


def through(entry: Entry, weights: Weights, shapes: dict[str, Any]) -> Plant:
    return lambda _w, _f: to_flax([entry], weights, shapes)


@flax_runner.in_x64
def coverage_rows(table: Declared, base: Weights, inputs: tuple[np.ndarray, ...], labels: np.ndarray) -> list[Row]:
    """One row per entry whose planted bug no check would catch, and one summary row (float64, eval or train)."""
    port, weights = table.port, as_dtype(base, "float64")
    # torch computing below float64 (`lowered`): each plant judged at float32's tolerance
    torch_side = torch_results(table, "float64", weights, inputs, None, ("outputs", "submodules"), caller="coverage")
    lowered = torch_side.lowered
    flax_model = flax_runner.flax_model_holding(port, table.entries, weights, "float64", table.mode)
    start = to_flax(table.entries, weights, table.flax_shapes)
    initial = initial_values(table)
    results = []
    for entry in table.entries:
        bug, plant = planted_bug(entry, weights, start, table.flax_shapes)
        # the initial value in the run's dtype (nnx.BatchNorm creates its statistics in float32 whatever its dtype)
        planted = {path: initial[path].astype(start[path].dtype) for path in entry.flax} | plant(weights, start)
        load_flax(flax_model, planted)
        state = None if table.mode == "eval" else flax_weights(flax_model)
        # one pass, one program for every entry: the outputs and the declared submodules' outputs
        outputs, recorded = flax_passes.flax_pass(port, flax_model, inputs, record=bool(port.submodules))
        rows = output_rows(port, torch_side.outputs, outputs, "float64", lowered)
        if table.mode == "train":  # the outputs use batch statistics: the running ones show only in their update
            rows += buffer_rows(table, torch_side.buffers, flax_weights(flax_model), "float64")
        if port.submodules and all(row.passed is not False for row in rows):  # the submodules, where not caught
            rows += submodule_rows(port, torch_side.submodules, recorded, "float64", lowered)
        load_flax(flax_model, (state or {}) | {path: start[path] for path in entry.flax})
        caught = next((row for row in rows if row.passed is False), None)
        results.append((entry, bug, caught))
    unreached = [
        entry
        for entry, _bug, caught in results
        if caught is None and table.mode == "eval" and cannot_affect(table, flax_model, entry, start, inputs)
    ]
    missed = [(entry, bug) for entry, bug, caught in results if caught is None and entry not in unreached]
    case = f"{len(results) - len(missed) - len(unreached)} of {len(results)} entries caught, a bug planted in each"
    if unreached:
        case += f"; {len(unreached)} cannot affect the outputs"
    rows = [
        dataclasses.replace(
            template(port, "float64", "coverage", case),
            compared="planted bug",
            tolerance="caught",
            passed=not missed,
            detail=f"{len(labels)} inputs; "
            + ("every planted bug is caught" if not missed else f"{len(missed)} missed"),
        )
    ]
    for entry in unreached:
        row = template(port, "float64", "coverage", str(entry))
        detail = (
            "cannot affect the outputs: a random change of every value (as large as the largest) moves no output "
            "beyond rounding, on these inputs and on random ones (e.g. a key's bias, which the softmax cancels)"
        )
        rows.append(
            dataclasses.replace(row, compared="planted bug", tolerance="no output moves", passed=True, detail=detail)
        )
    for entry, bug in missed:
        row = template(port, "float64", "coverage", str(entry))
        detail = f"not covered: {bug} passes the outputs, submodules and buffers checks on these inputs"
        rows.append(dataclasses.replace(row, compared="planted bug", tolerance="caught", passed=False, detail=detail))
    return rows


def random_like(inputs: tuple[np.ndarray, ...], seed: int = 1) -> tuple[np.ndarray, ...]:
    """Inputs of the same shapes and dtypes drawn at random: floats around the inputs' mean and spread, integers
    (token ids) within their range."""
    rng = np.random.default_rng(seed)
    drawn = []
    for x in inputs:
        if np.issubdtype(x.dtype, np.floating):
            drawn.append((x.mean() + (x.std() + 1e-3) * rng.standard_normal(x.shape)).astype(x.dtype))
        else:
            drawn.append(rng.integers(x.min(), x.max() + 1, size=x.shape).astype(x.dtype))
    return tuple(drawn)


def cannot_affect(table: Declared, model: Any, entry: Entry, start: Weights, inputs: tuple[np.ndarray, ...]) -> bool:
    """Whether no output moves beyond float64 rounding when every value of the entry's Flax parameters changes at
    random by as much as the largest of them, on `inputs` and on random inputs: a tensor no input can reach
    (a key's bias, which the softmax cancels), not a gap in the inputs. `model` holds `start` again after."""
    port, rng = table.port, np.random.default_rng(0)
    moved = {}
    for path in entry.flax:
        scale = max(1.0, float(np.abs(start[path]).max(initial=0.0)))
        moved[path] = start[path] + scale * rng.standard_normal(start[path].shape).astype(start[path].dtype)
    for xs in (inputs, random_like(inputs)):
        before = flax_passes.flax_forward(port, model, xs)
        load_flax(model, moved)
        after = flax_passes.flax_forward(port, model, xs)
        load_flax(model, {path: start[path] for path in entry.flax})
        rows = output_rows(port, before, after, "float64")
        if any(row.passed is False for row in rows):
            return False
    return True
