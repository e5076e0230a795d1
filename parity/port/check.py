"""Prove a declared port: `check_port` runs each check in float32 and float64 and returns a `Report`.

    report = check_port(port, inputs, labels)          # inputs in the PyTorch layout, NumPy
    assert report.passed, report.table()
    assert_port(port, inputs, labels)                  # the same, raising AssertionError with the table

Checks (`PORT_CHECKS`), each in float32 and float64 (both frameworks in float64: the math to ~1e-12;
float32 then shows only rounding), on one set of weights, the torch model's own initialisation plus noise:
- weights: both conversions through the table, exact round trips both ways;
- outputs: the models' outputs on `inputs`;
- submodules: each declared submodule's output, in the order PyTorch ran them; the first over its
  tolerance is the report's first divergence;
- gradients: of the loss, for every mapped parameter, relative to that tensor's largest gradient;
- trajectory: `steps` optimizer steps (torch Adam or SGD against optax's, hyperparameters matched) on the
  same batches, every step's loss and weights.
Verdicts and tolerances are the comparison core's (`parity.compare`), the same as the preset suite's.
Memory: one framework's model in one dtype at a time; a trajectory's weights go step by step through a
temporary folder, so a check holds a few copies of the model, not one per step.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity import compare
from parity.compare import Row, Weights
from parity.port import flax_runner, torch_runner, transforms
from parity.port.declare import Entry, Port, PortError, check_declaration
from parity.port.optimizer import Optimizer
from parity.port.report import Report
from parity.port.transforms import Shape
from parity.port.weights import as_dtype, build, flax_parameters, flax_shapes, port_weights, shapes, to_flax, to_torch

PORT_CHECKS = ("weights", "outputs", "submodules", "gradients", "trajectory")
RENAMED = {"training": "trajectory"}
ADAM = Optimizer()  # Adam at lr 1e-4, PyTorch's defaults otherwise


@dataclasses.dataclass(frozen=True)
class Declared:
    """A port's table, checked against both models' shapes."""

    entries: list[Entry]
    torch_shapes: dict[str, Shape]
    flax_shapes: dict[str, Shape]


def declared(port: Port, weights: Weights) -> Declared:
    """The weight table checked against the models before anything runs (else PortError)."""
    table = Declared(port.entries, shapes(weights), flax_shapes(build(port.flax_model, "float32")))
    check_declaration(table.entries, table.torch_shapes, table.flax_shapes)
    return table


def check_port(
    port: Port,
    inputs: np.ndarray,
    labels: np.ndarray,
    *,
    checks: Sequence[str] = PORT_CHECKS,
    dtypes: Sequence[str] = ("float32", "float64"),
    optimizer: Optimizer = ADAM,
    steps: int = 10,
    batch_size: int = 16,
    seed: int = 0,
) -> Report:
    """Every check in `checks`, in each dtype; `inputs` in the PyTorch layout, `labels` integers."""
    for name in checks:
        if name in RENAMED:
            raise PortError(f"checks: {name!r} is now called {RENAMED[name]!r}")
    unknown = [name for name in checks if name not in PORT_CHECKS]
    if unknown:
        raise PortError(f"checks: unknown {', '.join(unknown)}; expected some of {', '.join(PORT_CHECKS)}")
    if not dtypes or any(dtype not in ("float32", "float64") for dtype in dtypes):
        raise PortError(f"dtypes: expected float32 and/or float64, got {', '.join(dtypes) or 'none'}")
    if steps < 1 or batch_size < 1:
        raise PortError(f"steps and batch_size must be positive, got {steps} and {batch_size}")
    if "float64" in dtypes or "trajectory" in checks:
        flax_runner.enable_float64()
    base = port_weights(port, seed)
    table = declared(port, base)
    labels = np.asarray(labels).astype(np.int64)
    rows: list[Row] = []
    for dtype in dtypes:
        rows += dtype_rows(port, table, as_dtype(base, dtype), inputs.astype(dtype), labels, checks)
    if "trajectory" in checks:
        batches = [np.arange(step * batch_size, (step + 1) * batch_size) % len(inputs) for step in range(steps)]
        rows += trajectory_rows(port, table, base, dtypes, optimizer, (inputs, labels), batches)
    values = sum(array.size for array in base.values())
    return Report(port.name, rows, compare.first_divergence(rows, locating=("submodules",)), values)


def assert_port(port: Port, inputs: np.ndarray, labels: np.ndarray, **options: Any) -> Report:
    """`check_port`, raising AssertionError with the report's table when any row fails."""
    report = check_port(port, inputs, labels, **options)
    if not report.passed:
        raise AssertionError(report.table())
    return report


def template(port: Port, dtype: str, check: str, case: str = "") -> Row:
    return Row(port.name, check, case, "cpu", dtype, "torch vs jax", {}, "", None)


def dtype_rows(
    port: Port, table: Declared, weights: Weights, inputs: np.ndarray, labels: np.ndarray, checks: Sequence[str]
) -> list[Row]:
    """The checks of one dtype: torch's results first (then its model is dropped), then Flax's beside them."""
    dtype = str(inputs.dtype)
    model = torch_runner.torch_model_holding(port, weights, dtype)
    if "outputs" in checks:
        torch_output = transforms.apply(port.outputs, [torch_runner.torch_forward(model, inputs)], [])[0]
    calls = torch_runner.torch_submodule_outputs(port, model, inputs) if "submodules" in checks else []
    if "gradients" in checks:
        loss, gradients = torch_runner.torch_gradients(model, torch_runner.port_loss(port, inputs, labels))
        gradients = to_flax(table.entries, gradients, table.flax_shapes)
    del model
    flax_model = flax_runner.flax_model_holding(port, table.entries, weights, dtype)
    rows = weight_rows(port, table, weights, flax_model, dtype) if "weights" in checks else []
    if "outputs" in checks:
        flax_output = flax_runner.flax_forward(port, flax_model, inputs)
        if dtype == "float64" and flax_output.dtype != np.float64:
            raise PortError(
                f"{port.name}: the Flax model computes in {flax_output.dtype} with float64 weights and inputs; "
                "leave its modules' dtype unset (None) so that float64 runs in float64"
            )
        rows.append(
            compare.compare_outputs(
                template(port, dtype, "outputs", f"{len(inputs)} inputs"), torch_output, flax_output
            )
        )
    if "submodules" in checks and port.submodules:
        rows += submodule_rows(port, calls, flax_runner.flax_submodule_outputs(port, flax_model, inputs), dtype)
    if "gradients" in checks:
        flax_loss, flax_gradients = flax_runner.flax_gradients(port, flax_model, inputs, labels)
        row = template(port, dtype, "gradients", f"{len(flax_gradients)} parameters")
        row.detail = f"loss {loss:.6g} vs {flax_loss:.6g}"
        rows.append(compare.compare_gradients(row, gradients, flax_gradients))
    return rows


def weight_rows(port: Port, table: Declared, weights: Weights, flax_model: Any, dtype: str) -> list[Row]:
    """Both conversions through the table, each round trip exact (every value, bit for bit), one entry at a time."""
    held = flax_parameters(flax_model)
    torch_exact = flax_exact = loaded_exact = True
    for entry in table.entries:
        flax = to_flax([entry], weights, table.flax_shapes)
        back = to_torch([entry], flax, table.torch_shapes)
        again = to_flax([entry], back, table.flax_shapes)
        torch_exact &= all(
            np.array_equal(weights[n], back[n]) and weights[n].shape == back[n].shape for n in entry.torch
        )
        flax_exact &= all(np.array_equal(flax[p], again[p]) for p in entry.flax)
        loaded_exact &= all(np.array_equal(flax[p], np.asarray(held[p].get_value())) for p in entry.flax)
    count = f"{len(table.torch_shapes)} torch tensors, {len(table.flax_shapes)} Flax parameters"
    row = dataclasses.replace(template(port, dtype, "weights"), compared="round trip", tolerance="exact")
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
    port: Port, torch_calls: list[tuple[str, np.ndarray]], flax_calls: dict[str, list[np.ndarray]], dtype: str
) -> list[Row]:
    """Each declared submodule's outputs, in the order PyTorch ran them."""
    entries = {entry.torch[0]: entry for entry in port.submodule_entries}
    seen: dict[str, int] = {}
    rows = []
    for name, output in torch_calls:
        entry = entries[name]
        call = seen.get(name, 0)
        seen[name] = call + 1
        flax_outputs = flax_calls.get(entry.flax[0], [])
        row = template(
            port, dtype, "submodules", f"{name} (flax {entry.flax[0]})" + (f", call {call + 1}" if call else "")
        )
        if call >= len(flax_outputs):
            ran = f"flax {entry.flax[0]} ran {len(flax_outputs)} times, torch {name} at least {call + 1}"
            rows.append(dataclasses.replace(row, tolerance="-", passed=False, detail=ran))
            continue
        reference = transforms.apply(entry.steps, [output], [])[0]
        rows.append(compare.compare_outputs(row, reference, flax_outputs[call]))
    missing = [e.torch[0] for e in port.submodule_entries if e.torch[0] not in seen]
    if missing:
        row = template(port, dtype, "submodules", ", ".join(missing))
        rows.append(dataclasses.replace(row, tolerance="-", passed=False, detail="declared, but torch never ran them"))
    return rows


# ---- the trajectory, one step's weights at a time -----------------------------------------------------------


class StepStore:
    """Each recorded run's weights after every step, on disk (one safetensors file a step), and its losses."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.losses: dict[str, list[float]] = {}

    def path(self, run: str, step: int) -> Path:
        return self.folder / f"{run}-{step}.safetensors"

    def against(
        self, reference: str | None, run: Iterator[tuple[float, Weights]], record_as: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Step through `run`: compare each step with `reference`'s same step (loss gap, largest weight gap),
        and keep it as `record_as`. Returns the per-step gaps (empty without a reference)."""
        from safetensors.numpy import load_file, save_file

        loss_gaps, weight_gaps, losses = [], [], []
        for step, (loss, weights) in enumerate(run):
            losses.append(loss)
            if reference is not None:
                loss_gaps.append(abs(self.losses[reference][step] - loss))
                weight_gaps.append(compare.weight_gap(load_file(str(self.path(reference, step))), weights))
            if record_as is not None:
                save_file(weights, str(self.path(record_as, step)))
        if record_as is not None:
            self.losses[record_as] = losses
        return np.array(loss_gaps), np.array(weight_gaps)


def trajectory_rows(
    port: Port,
    table: Declared,
    base: Weights,
    dtypes: Sequence[str],
    optimizer: Optimizer,
    data: tuple[np.ndarray, np.ndarray],
    batches: list[np.ndarray],
) -> list[Row]:
    """torch and Flax trained side by side on the same batches, compared step by step. float64 against torch's
    float64 run; float32 against torch's float32 run, within the drift torch's float32 run has from its float64
    one (so torch in float64 runs even for float32 alone). One model is alive at a time."""
    inputs, labels = data

    def torch_run(dtype: str) -> Iterator[tuple[float, Weights]]:
        model = torch_runner.torch_model_holding(port, as_dtype(base, dtype), dtype)
        x = inputs.astype(dtype)
        yield from torch_runner.torch_steps(
            port, model, table.entries, table.flax_shapes, optimizer, x, labels, batches
        )

    def flax_run(dtype: str) -> Iterator[tuple[float, Weights]]:
        model = flax_runner.flax_model_holding(port, table.entries, as_dtype(base, dtype), dtype)
        yield from flax_runner.flax_steps(port, model, optimizer, inputs.astype(dtype), labels, batches)

    gaps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with tempfile.TemporaryDirectory(prefix="parity-trajectory-") as folder:
        store = StepStore(Path(folder))
        store.against(None, torch_run("float64"), record_as="torch64")
        if "float64" in dtypes:
            gaps["float64"] = store.against("torch64", flax_run("float64"))
        if "float32" in dtypes:
            gaps["rounding"] = store.against("torch64", torch_run("float32"), record_as="torch32")
            gaps["float32"] = store.against("torch32", flax_run("float32"))
    case = f"{optimizer.kind}, {len(batches)} steps"
    return [
        compare.compare_trajectories(
            template(port, dtype, "trajectory", case),
            gaps[dtype],
            optimizer.learning_rate,
            gaps["rounding"] if dtype == "float32" else None,
        )
        for dtype in dtypes
    ]
