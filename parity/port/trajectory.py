"""The trajectory check: torch and Flax trained side by side on the same batches, compared step by step.

float64 against torch's float64 run; float32 against torch's float32 run, within the drift each framework's
float32 run has from its own float64 one, the larger (optax's float32 Adam computes its bias correction
1 - b2^t in float32 where torch uses Python's float64, and drifts further than torch does); with float32
alone, torch's drift (torch's float64 run is its yardstick, and a Flax model that cannot run float64 still
checks in float32). One model is alive at a time:
each run's weights after every step go through a temporary folder, one safetensors file a step, so a check
holds a few copies of the model, not one per step. Batch statistics are carried from step to step and
compared with the weights; a summed entry (`add()`) trains in torch as its one Flax parameter does, the sum in
its first tensor and the later terms held at zero (`weights.frozen_terms`).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from parity import compare
from parity.compare import Row, Weights
from parity.port import flax_runner, precision, torch_runner
from parity.port.optimizer import Optimizer
from parity.port.rows import as_run, judged_as
from parity.port.trees import in_dtype
from parity.port.weights import as_dtype, frozen_terms, one_way_start

if TYPE_CHECKING:
    from parity.port.table import Declared


class StepStore:
    """Each recorded run's weights after every step, on disk (one safetensors file a step), and its losses."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.losses: dict[str, list[float]] = {}

    def path(self, run: str, step: int) -> Path:
        return self.folder / f"{run}-{step}.safetensors"

    def replay(self, run: str) -> Iterator[tuple[float, Weights]]:
        """A recorded run's steps again, from disk."""
        from safetensors.numpy import load_file

        for step, loss in enumerate(self.losses[run]):
            yield loss, load_file(str(self.path(run, step)))

    def against(
        self, reference: str | None, run: Iterator[tuple[float, Weights]], record_as: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Step through `run`: compare each step with `reference`'s same step (loss gap, largest weight gap),
        and keep it as `record_as`. Returns the per-step gaps (empty without a reference)."""
        from safetensors.numpy import save_file

        losses: list[float] = []

        def recorded() -> Iterator[tuple[float, Weights]]:
            for step, (loss, weights) in enumerate(run):
                losses.append(loss)
                if record_as is not None:
                    save_file(weights, str(self.path(record_as, step)))
                yield loss, weights

        gaps = step_gaps(None if reference is None else self.replay(reference), recorded())
        if record_as is not None:
            self.losses[record_as] = losses
        return gaps


def step_gaps(
    reference: Iterable[tuple[float, Weights]] | None, run: Iterable[tuple[float, Weights]]
) -> tuple[np.ndarray, np.ndarray]:
    """Per step: the loss gap and the largest weight gap of `run` from `reference` (recorded steps, on disk or in
    a reference file), what `compare.compare_trajectories` judges; without a reference, `run` stepped through."""
    pairs = zip(reference, run, strict=True) if reference is not None else ((None, step) for step in run)
    gaps = [(abs(ref[0] - loss), compare.weight_gap(ref[1], weights)) for ref, (loss, weights) in pairs if ref]
    return np.array([gap for gap, _ in gaps]), np.array([gap for _, gap in gaps])


def trajectory_rows(
    table: Declared,
    base: Weights,
    dtypes: Sequence[str],
    optimizer: Optimizer,
    data: tuple[tuple[np.ndarray, ...], np.ndarray],
    batches: list[np.ndarray],
) -> list[Row]:
    """One row a dtype: every step's loss and weights (batch statistics included), torch against Flax."""
    port, inputs, labels = table.port, data[0], data[1]
    frozen = frozen_terms(table.entries)

    def torch_run(dtype: str, lowered: torch_runner.Lowered | None = None) -> Iterator[tuple[float, Weights]]:
        return torch_steps(table, base, dtype, optimizer, (inputs, labels), batches, lowered)

    def flax_run(dtype: str) -> Iterator[tuple[float, Weights]]:
        return flax_steps(table, base, dtype, optimizer, (inputs, labels), batches)

    gaps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with tempfile.TemporaryDirectory(prefix="parity-trajectory-") as folder:
        store = StepStore(Path(folder))
        lowered = torch_runner.Lowered()  # what torch computes below float64 (then float64 is judged as float32)
        store.against(None, torch_run("float64", lowered), record_as="torch64")
        if "float64" in dtypes:  # also float32's yardstick: Flax's own float32-vs-float64 drift
            with flax_runner.x64("float64"):
                gaps["float64"] = store.against("torch64", flax_run("float64"), record_as="flax64")
        if "float32" in dtypes or lowered.modules:
            gaps["rounding"] = store.against("torch64", torch_run("float32"), record_as="torch32")
        if "float32" in dtypes:
            gaps["float32"] = store.against("torch32", flax_run("float32"), record_as="flax32")
            # each framework's own rounding, the larger: optax's float32 Adam computes its bias correction
            # 1 - b2^t in float32 (x64 off, as users run it), torch in Python's float64
            if "float64" in dtypes:  # Flax's own float32 rounding, at full float32 precision (TF32 is no rounding)
                drift = store.against("flax64", flax_own_float32(store, flax_run))
                torch_drift = gaps["rounding"]
                gaps["rounding"] = (np.maximum(torch_drift[0], drift[0]), np.maximum(torch_drift[1], drift[1]))
    case = f"{optimizer.kind}, {len(batches)} steps" + (", train mode" if table.mode == "train" else "")
    more = ", ..." if len(frozen) > 3 else ""
    held = f"; torch holds {', '.join(frozen[:3])}{more} at zero (summed into the first term)" if frozen else ""
    rows = []
    for dtype in dtypes:
        judged = judged_as(dtype, lowered)
        row = Row(port.name, "trajectory", case, table.device, judged, "torch vs jax", {}, "", None)
        row = compare.compare_trajectories(
            row, gaps[dtype], optimizer.learning_rate, gaps["rounding"] if judged == "float32" else None
        )
        row.detail += held
        rows.append(as_run(row, dtype, lowered))
    return rows


def torch_steps(
    table: Declared,
    base: Weights,
    dtype: str,
    optimizer: Optimizer,
    data: tuple[tuple[np.ndarray, ...], np.ndarray],
    batches: list[np.ndarray],
    lowered: torch_runner.Lowered | None = None,
) -> Iterator[tuple[float, Weights]]:
    """torch's run of `optimizer` steps from `base` (state_dict names) in `dtype`: each step's loss and weights
    (Flax layout); a summed entry trains as its one Flax parameter does (`weights.one_way_start`)."""
    port, entries, shapes = table.port, table.entries, table.flax_shapes
    start = one_way_start(entries, as_dtype(base, dtype), shapes)  # summed in `dtype`
    model = torch_runner.torch_model_holding(port, start, dtype, table.mode, table.device)
    with lowered.watching(model) if lowered else contextlib.nullcontext():
        yield from torch_runner.torch_steps(
            port, model, entries, shapes, optimizer, in_dtype(data[0], dtype), data[1], batches
        )


def flax_steps(
    table: Declared,
    base: Weights,
    dtype: str,
    optimizer: Optimizer,
    data: tuple[tuple[np.ndarray, ...], np.ndarray],
    batches: list[np.ndarray],
) -> Iterator[tuple[float, Weights]]:
    """Flax's run of the same steps (JAX's x64 as the caller set it): each step's loss and mapped variables."""
    mapped = {path for entry in table.entries for path in entry.flax}
    with flax_runner.on_device(table.device):
        model = flax_runner.flax_model_holding(table.port, table.entries, as_dtype(base, dtype), dtype, table.mode)
        yield from flax_runner.flax_steps(
            table.port, model, optimizer, in_dtype(data[0], dtype), data[1], batches, mapped
        )


def flax_own_float32(
    store: StepStore, flax_run: Callable[[str], Iterator[tuple[float, Weights]]]
) -> Iterator[tuple[float, Weights]]:
    """Flax's float32 steps as the yardstick of its own rounding: the recorded run; on a GPU or TPU short of
    full matmul precision, a run at 'highest' (TF32 is not rounding: the float32 row should fail, and says so)."""
    if not precision.jax_reduced_precision():
        return store.replay("flax32")

    def at_highest() -> Iterator[tuple[float, Weights]]:
        import jax

        with jax.default_matmul_precision("highest"):
            yield from flax_run("float32")

    return at_highest()
