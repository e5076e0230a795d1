"""References that outlive the process: torch's float64 results saved once, a Flax model checked against them
later with no torch installed (on another machine, a GPU or TPU host, a later JAX or Flax).

    save_reference(port, inputs, "cnn.reference.safetensors", labels)      # needs torch; writes one file
    report = check_reference("cnn.reference.safetensors", FlaxCNN, port.weights)   # needs only JAX and Flax

One safetensors file holds the inputs (already in the Flax layout), the labels, the start weights (in the
Flax layout, through the table), torch's outputs, every declared submodule's outputs, the loss gradients
and a few optimizer steps (each step's loss and weights), with metadata: the port, the table, the dtype,
the mode, the optimizer, the versions and the date. `check_reference` refuses, in one line naming the file,
a file that is missing, truncated, not a reference, of another dtype, or saved from another table or Flax
model; then runs the Flax side of `check_port` against it and names the reference in its report. Nothing is
written over an existing reference unless `overwrite=True`; the file is written atomically.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.outputs import write_atomically
from parity import compare
from parity.compare import Row, Weights
from parity.port import flax_runner, transforms
from parity.port.building import built_to_fill
from parity.port.check import flax_rows
from parity.port.declare import Port, PortError, parse_entry
from parity.port.environment import precision_environment, version
from parity.port.optimizer import Optimizer
from parity.port.report import Report
from parity.port.results import TorchResults, torch_results
from parity.port.rows import template
from parity.port.scope import in_one_check
from parity.port.table import declared
from parity.port.trajectory import step_gaps, torch_steps
from parity.port.trees import flax_cross_entropy, in_dtype
from parity.port.weights import as_dtype, flax_shapes, load_flax, to_flax

FORMAT = "seqmnist-port-reference/2"
SAVED = ("outputs", "submodules", "gradients")  # what a reference holds of torch's results, besides its steps
ADAM = Optimizer()


def table_text(weights: Sequence[Sequence[Any]]) -> str:
    """A weight table as one line per row (`conv1.weight -> conv1.kernel: permute(2, 3, 1, 0)`): what a
    reference was saved with, compared row by row."""
    return "\n".join(
        f"{entry}: {' '.join(str(step) for step in entry.steps) or 'as it is'}" for entry in map(parse_entry, weights)
    )


@flax_runner.in_x64
def save_reference(
    port: Port,
    inputs: np.ndarray | Sequence[np.ndarray],
    path: str | Path,
    labels: np.ndarray | None = None,
    *,
    steps: int = 3,
    batch_size: int = 8,
    optimizer: Optimizer = ADAM,
    mode: str = "eval",
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """torch's float64 results for `port` on `inputs` (PyTorch layout) written to `path`; returns the path."""
    from parity.port.arguments import checked_call, probe_torch
    from parity.port.weights import torch_start

    path = Path(path)
    if optimizer.make_torch is not None or optimizer.make_optax is not None:
        raise PortError(
            f"{path}: save_reference keeps the optimizer's hyperparameters, not code: give an Optimizer "
            "without make_torch or make_optax"
        )
    if path.exists() and not overwrite:
        raise PortError(f"{path}: a reference is already there; pass overwrite=True to replace it")
    port, xs, labels = checked_call(port, inputs, labels, "save_reference", labels_optional=True)
    labels = np.zeros(len(xs[0]), np.int64) if labels is None else labels
    xs = in_dtype(xs, "float64")
    begun = torch_start(port, seed, lambda model: probe_torch(model, port, xs, labels, "save_reference"))
    table = declared(port, begun, mode)
    base = as_dtype(begun.weights, "float64")
    entries, shapes = table.entries, table.flax_shapes
    tensors: dict[str, np.ndarray] = {"labels": labels}
    for index, (x, s) in enumerate(zip(xs, port.input_steps(len(xs)), strict=True)):
        tensors[f"inputs/{index}"] = np.ascontiguousarray(transforms.apply(s, [x], [])[0])
    start = to_flax(entries, base, shapes)
    tensors.update({f"weights/{name}": array for name, array in start.items()})
    results = torch_results(table, "float64", base, xs, labels, SAVED, caller="save_reference")
    saved, described = results.tensors()
    tensors.update(saved)
    batches = [np.arange(step * batch_size, (step + 1) * batch_size) % len(labels) for step in range(steps)]
    losses = []
    for step, (step_loss, weights) in enumerate(torch_steps(table, base, "float64", optimizer, (xs, labels), batches)):
        losses.append(step_loss)
        tensors.update({f"steps/{step}/{name}": array for name, array in weights.items()})
    tensors["losses"], tensors["batches"] = np.array(losses), np.stack(batches)
    metadata = {
        "format": FORMAT,
        "port": port.name,
        "dtype": "float64",
        "mode": mode,
        **described,
        "optimizer": json.dumps({k: v for k, v in dataclasses.asdict(optimizer).items() if not k.startswith("make_")}),
        "table": table_text(port.weights),
        "saved": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "versions": f"torch {version('torch')}, numpy {np.__version__}",
    }
    from safetensors.numpy import save

    contiguous = {name: np.ascontiguousarray(array) for name, array in tensors.items()}
    write_atomically(path, save(contiguous, metadata))
    return path


def read_reference(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The file's arrays and metadata, or one line saying why it is not a reference."""
    from safetensors import safe_open

    if not path.is_file():
        raise PortError(f"{path}: no such reference file")
    try:
        with safe_open(str(path), "numpy") as stored:
            metadata = stored.metadata() or {}
            found = metadata.get("format", "")
            if found != FORMAT and found.startswith(FORMAT.split("/")[0] + "/"):
                raise PortError(f"{path}: a reference in format {found}, this version reads {FORMAT}: save it again")
            if found != FORMAT:
                raise PortError(
                    f"{path}: not a port reference (format {metadata.get('format')!r}, expected {FORMAT!r})"
                )
            return {name: stored.get_tensor(name) for name in stored.keys()}, metadata  # noqa: SIM118
    except PortError:
        raise
    except Exception as error:  # safetensors' own error for a truncated or corrupt file
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise PortError(f"{path}: not a readable safetensors file (truncated or corrupt?): {reason}") from None


def section(tensors: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {name.removeprefix(prefix): array for name, array in tensors.items() if name.startswith(prefix)}


def refuse_mismatch(path: Path, metadata: dict[str, str], weights: Sequence[Sequence[Any]] | None, dtype: str) -> None:
    """Another dtype or another table: one line naming the file and the first thing that differs."""
    if metadata.get("dtype") != dtype:
        raise PortError(f"{path}: holds {metadata.get('dtype')} results; this check is in {dtype}")
    if weights is not None:
        saved, given = metadata.get("table", "").splitlines(), table_text(weights).splitlines()
        if saved != given:
            first = next((f"{a!r} in the file, {b!r} here" for a, b in zip(saved, given, strict=False) if a != b), "")
            first = first or f"{len(saved)} rows in the file, {len(given)} here"
            raise PortError(f"{path}: saved from another port ({metadata.get('port')}): its table differs: {first}")


@flax_runner.in_x64
@in_one_check
def check_reference(
    path: str | Path,
    flax_model: Callable[..., Any],
    weights: Sequence[Sequence[Any]] | Port | None = None,
    *,
    flax_loss: Callable[[Any, Any], Any] = flax_cross_entropy,
    flax_forward: Callable[..., Any] | None = None,
) -> Report:
    """The Flax model (a factory, as `Port.flax_model`) against the reference at `path`: outputs, submodules,
    gradients and the saved optimizer steps, in float64. `weights`: the port's table (or the Port), checked
    against the one the file was saved with. `flax_forward`: how the model is called, as `Port`'s (by
    default the Port's, when `weights` is one). Needs no torch."""
    from parity.port.arguments import check_factory

    check_factory(flax_model, "flax_model", "check_reference")
    path = Path(path)
    inner = getattr(weights, "port", None)
    weights = inner if isinstance(inner, Port) else weights  # infer_port's result: its Port
    table = weights.weights if isinstance(weights, Port) else weights
    tensors, metadata = read_reference(path)
    refuse_mismatch(path, metadata, table, "float64")
    from jax_impl.cache import enable_compilation_cache

    enable_compilation_cache()  # JAX's programs kept on disk across runs (jax_impl/cache.py)
    start = section(tensors, "weights/")
    model = built_to_fill(flax_model, "float64", start)  # abstractly: the saved weights fill it
    shapes = flax_shapes(model)
    for name, array in start.items():
        if name not in shapes or shapes[name] != array.shape:
            found = f"is {shapes[name]}" if name in shapes else "does not exist"
            raise PortError(f"{path}: holds {name} {array.shape}, but the Flax model's {found}: another model?")
    load_flax(model, start)
    model.train() if metadata["mode"] == "train" else model.eval()
    results = TorchResults.read(tensors, metadata)
    submodules = list(dict.fromkeys((name, path) for name, path, _ in results.submodules))
    if flax_forward is None and isinstance(weights, Port):
        flax_forward = weights.flax_forward
    port = Port(metadata["port"], no_torch, flax_model, [], submodules, flax_loss=flax_loss, flax_forward=flax_forward)
    inputs = tuple(array for name, array in sorted(section(tensors, "inputs/").items(), key=lambda kv: int(kv[0])))
    rows = flax_rows(port, results, model, inputs, tensors["labels"], SAVED, caller="check_reference")
    rows = [dataclasses.replace(row, compared="torch (saved) vs jax") for row in rows]
    optimizer = Optimizer(**json.loads(metadata["optimizer"]))
    rows.append(
        trajectory_row(port, built_to_fill(flax_model, "float64", start), start, tensors, optimizer, metadata["mode"])
    )
    saved = f"{path} (port {metadata['port']}, saved {metadata['saved']} with {metadata['versions']})"
    divergence = compare.first_divergence(rows, locating=("submodules",))
    values = sum(array.size for array in start.values())
    return Report(
        metadata["port"], rows, divergence, values, [], metadata["mode"], precision_environment(["float64"]), saved
    )


def no_torch() -> Any:
    raise PortError("a reference check runs the Flax side only")


def trajectory_row(
    port: Port, model: Any, start: Weights, tensors: dict[str, np.ndarray], optimizer: Optimizer, mode: str
) -> Row:
    """The saved optimizer steps replayed in Flax: every step's loss and weights against the reference's."""
    load_flax(model, start)
    model.train() if mode == "train" else model.eval()
    inputs = tuple(array for name, array in sorted(section(tensors, "inputs/").items(), key=lambda kv: int(kv[0])))
    batches, losses = list(tensors["batches"]), tensors["losses"]
    run = flax_runner.flax_steps(port, model, optimizer, inputs, tensors["labels"], batches, set(start))
    saved = ((float(loss), section(tensors, f"steps/{step}/")) for step, loss in enumerate(losses))
    row = template(port, "float64", "trajectory", f"{optimizer.kind}, {len(batches)} steps (saved)")
    return compare.compare_trajectories(row, step_gaps(saved, run), optimizer.learning_rate)
