"""Prove a declared port: `check_port` runs each check in float32 and float64 and returns a `Report`.

    report = check_port(port, inputs, labels)          # inputs in the PyTorch layout, NumPy (or a tuple)
    assert report.passed, report.table()
    assert_port(port, inputs, labels)                  # the same, raising AssertionError with the table
    check_port(port, inputs, labels, mode="train")     # batch statistics, their updates, training with them

Checks (`PORT_CHECKS`: weights, outputs, submodules, units, gradients, trajectory), each in float32 and
float64 (both frameworks in float64: the math to ~1e-12; float32 then shows only rounding), on one set of
weights; what each compares, its tolerance, what it proves and what it cannot: docs/porting.md, section 4.
Each dtype runs torch first (`results.torch_results`: one object, its model then dropped), then Flax beside
it (`flax_rows`, the rows `check_reference` gives too); the trajectory runs each framework's steps in turn
(`parity.port.trajectory`). Verdicts and tolerances are the comparison core's (`parity.compare`), the same
as the preset suite's. Memory: one framework's model in one dtype at a time.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from parity import compare
from parity.compare import Row, Weights
from parity.port import arguments, flax_passes, flax_runner, memory
from parity.port.conventions import check_gru_biases
from parity.port.coverage import coverage_rows
from parity.port.declare import Port
from parity.port.environment import precision_environment
from parity.port.local import between_units, unit_rows
from parity.port.optimizer import Optimizer
from parity.port.precision import diagnose_tf32
from parity.port.report import Report
from parity.port.results import TorchResults, torch_results
from parity.port.rows import buffer_rows, gradient_row, lowered_rows, output_rows, submodule_rows, weight_rows
from parity.port.scope import in_one_check
from parity.port.table import Declared, declared
from parity.port.trajectory import trajectory_rows
from parity.port.trees import in_dtype
from parity.port.weights import (
    Widening,
    as_dtype,
    flax_weights,
    torch_start,
)

RERUN = {"buffers": "outputs"}  # a failing row's check -> the check that computes it
ADAM = Optimizer()  # Adam at lr 1e-4, PyTorch's defaults otherwise


@in_one_check
def check_port(
    port: Port,
    inputs: np.ndarray | Sequence[np.ndarray],
    labels: np.ndarray | None,
    *,
    checks: Sequence[str] | None = None,
    dtypes: Sequence[str] = ("float32", "float64"),
    mode: str = "eval",
    optimizer: Optimizer = ADAM,
    steps: int = 10,
    batch_size: int = 16,
    seed: int = 0,
    coverage: bool = False,
    streaming: bool = False,
    device: str = "cpu",
    weights: Weights | None = None,
    batches: Sequence[np.ndarray] | None = None,
) -> Report:
    """Every check in `checks`, in each dtype; `inputs` (one array, or a tuple for a model of several inputs) in
    the PyTorch layout, `labels` integers; both models in `mode` ("eval" or "train"). `coverage`: also plant
    the likeliest bug in each entry and report any the outputs and submodules checks would miss
    (`parity.port.coverage`). `streaming`: both models held in float32 alone, the float64 run computing on each
    weight's float64 copy as it is used (`torch_runner.widened`; Flax promotes float32 weights against float64
    inputs), for a model too large to hold in float64: the weights, outputs, submodules and units checks, in
    eval mode (the default checks then). Without it, a check estimated to need more memory than is free stops
    before it builds a model (`parity.port.memory`). `device`: "cpu", or "gpu" (both models on the first GPU;
    coverage runs on the CPU). `weights`: the weights every check starts from (state_dict names, every entry),
    in place of the torch model's own initialisation plus noise. `batches`: the trajectory's batches, each an
    array of row indices into `inputs`, in place of `steps` batches of `batch_size` rows in order."""
    checks = arguments.checked_options(checks, dtypes, mode, steps, batch_size, streaming, coverage, device)
    needs_labels = coverage or bool({"gradients", "trajectory"} & set(checks))
    port, xs, labels = arguments.checked_call(port, inputs, labels, "check_port", labels_optional=not needs_labels)
    from jax_impl.cache import enable_compilation_cache

    enable_compilation_cache()  # JAX's programs kept on disk across runs (jax_impl/cache.py)
    memory.check_fits(port, checks, streaming, "check_port")

    def probe(model: Any) -> None:
        arguments.probe_torch(model, port, xs, labels, "check_port")

    start = arguments.given_start(torch_start(port, seed, probe), weights, "check_port")
    base = start.weights
    check_gru_biases(port.entries, start.grus, list(base), port.not_ported)
    table = declared(port, start, mode, device)
    by_dtype: dict[str, list[Row]] = {}
    if batches is None:
        batches = [np.arange(step * batch_size, (step + 1) * batch_size) % len(xs[0]) for step in range(steps)]
    batches = arguments.checked_batches(batches, len(xs[0]), "check_port")
    with tempfile.TemporaryDirectory(prefix="parity-gradients-") as folder:
        exact = Path(folder) / "torch-float64.safetensors" if "gradients" in checks and len(dtypes) == 2 else None

        def run(dtype: str, only: Sequence[str]) -> list[Row]:
            if "trajectory" in only:
                return trajectory_rows(table, base, (dtype,), optimizer, (xs, labels), batches)
            with flax_runner.x64(dtype), flax_runner.on_device(device):  # x64 for float64 alone, as a context
                held = "float32" if streaming else dtype  # the weights' dtype in both models
                weights = as_dtype(base, held)
                return dtype_rows(table, dtype, weights, in_dtype(xs, dtype), labels, only, exact, held)

        for dtype in sorted(dtypes, reverse=True):  # float64 first: torch's float64 gradients judge float32's rounding
            by_dtype[dtype] = run(dtype, [name for name in checks if name != "trajectory"])
        rows = [row for dtype in dtypes for row in by_dtype[dtype]]
        if "trajectory" in checks:
            rows += trajectory_rows(table, base, dtypes, optimizer, (xs, labels), batches)
        rows = diagnose_tf32(rows, lambda check: run("float32", (RERUN.get(check, check),)))
    if coverage:
        rows += coverage_rows(table, base, in_dtype(xs, "float64"), labels)
    values = sum(array.size for array in base.values())
    rows += [row for dtype in dtypes for row in between_units(rows, dtype)]
    divergence = compare.first_divergence(rows, locating=("units", "submodules", "buffers"))
    environment = precision_environment(dtypes, streaming)
    rows = [dataclasses.replace(row, device=device) for row in rows]
    return Report(port.name, rows, divergence, values, table.not_ported, mode, environment)


def assert_port(port: Port, inputs: np.ndarray | Sequence[np.ndarray], labels: np.ndarray, **options: Any) -> Report:
    """`check_port`, raising AssertionError with the report's table when any row fails."""
    report = check_port(port, inputs, labels, **options)
    if not report.passed:
        raise AssertionError(report.table())
    return report


def dtype_rows(
    table: Declared,
    dtype: str,
    weights: Weights,
    inputs: tuple[np.ndarray, ...],
    labels: np.ndarray,
    checks: Sequence[str],
    exact: Path | None = None,
    held: str | None = None,
) -> list[Row]:
    """The checks of one dtype: torch's results first (`TorchResults`; then its model is dropped), then Flax's
    beside them. `exact`: where the float64 run keeps torch's gradients, and the float32 run reads them (its
    yardstick). `held`: the dtype both models hold the weights in (float32 in streaming mode), if not `dtype`."""
    results = torch_results(table, dtype, weights, inputs, labels, checks, held)
    rounding = None
    if results.gradients is not None and exact is not None and dtype == "float64":
        save_file(results.gradients, str(exact))
    elif results.gradients is not None and exact is not None and exact.exists():
        rounding = rounding_gaps(results.gradients, exact)
    wide = Widening(weights, dtype) if (held or dtype) != dtype else weights  # streaming: converted in float64
    flax_model = flax_runner.flax_model_holding(table.port, table.entries, wide, dtype, table.mode)
    rows = weight_rows(table, wide, flax_model, dtype) if "weights" in checks else []
    compiled = wide is weights  # a streaming run's passes eager: one weight's float64 copy at a time
    return rows + flax_rows(table.port, results, flax_model, inputs, labels, checks, table, rounding, compiled=compiled)


def flax_rows(
    port: Port,
    results: TorchResults,
    flax_model: Any,
    inputs: tuple[np.ndarray, ...],
    labels: np.ndarray,
    checks: Sequence[str],
    table: Declared | None = None,
    rounding: dict[str, float] | None = None,
    caller: str = "check_port",
    compiled: bool = True,
) -> list[Row]:
    """Flax's results beside torch's (`results`, computed now or read from a reference file): outputs (and in train
    mode, with a `table`, the buffers after them), units, submodules, gradients. One copy of these rows, which
    `check_port` and `check_reference` both give. `compiled`: each forward pass one compiled program
    (`flax_passes`); a streaming run's are eager (float64 copies made one weight at a time)."""
    dtype, lowered = results.dtype, results.lowered
    rows = lowered_rows(port, lowered)
    refused = functools.partial(arguments.refusal, "Flax", inputs, caller)  # a fresh context each time
    submodules = "submodules" in checks and bool(port.submodules)
    if "outputs" in checks or submodules:  # one pass for both
        with refused():
            flax_outputs, recorded = flax_passes.flax_pass(
                port, flax_model, inputs, record=submodules, compiled=compiled
            )
    if "outputs" in checks:
        rows += output_rows(port, results.outputs, flax_outputs, dtype, lowered)
        if table is not None and table.mode == "train":
            rows += buffer_rows(table, results.buffers, flax_weights(flax_model), dtype)
    if results.units:
        with refused():
            rows += unit_rows(port, results.units, flax_model, dtype, inputs, lowered, compiled)
    if submodules:
        rows += submodule_rows(port, results.submodules, recorded, dtype, lowered)
    if "gradients" in checks and results.gradients is not None and results.loss is not None:
        with refused():
            flax_side = flax_runner.flax_gradients(port, flax_model, inputs, labels)
        rows.append(gradient_row(port, dtype, (results.loss, results.gradients), flax_side, rounding, lowered))
    return rows


def rounding_gaps(gradients: Weights, exact: Path) -> dict[str, float]:
    """Each float32 gradient's largest gap from torch's float64 one, relative to that tensor's largest (as
    `compare.gradient_gaps`), read one tensor at a time from `exact`."""
    from safetensors import safe_open

    with safe_open(str(exact), "numpy") as stored:
        largest = {name: float(np.abs(stored.get_tensor(name)).max(initial=0.0)) for name in gradients}
        floor = compare.GRADIENT_FLOOR * max(largest.values(), default=0.0)
        return {
            name: compare.max_gap(stored.get_tensor(name), gradient) / max(largest[name], floor, 1e-30)
            for name, gradient in gradients.items()
        }
