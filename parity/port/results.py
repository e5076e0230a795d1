"""What torch computes for a port in one dtype, apart from any comparison (Polygraphy's shape: run, then
compare). One object, everything in the Flax layout (the table's, each output's and each submodule's steps
applied), so that Flax's results compare with it as they are: `check_port` computes it and compares at once
(`parity.port.check.flax_rows`); `save_reference` writes it to a file; `check_reference` reads it back and
compares through the same rows, with no torch installed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from parity.compare import Weights
from parity.port import torch_runner, transforms
from parity.port.arguments import refusal
from parity.port.torch_runner import Lowered, UnitCall
from parity.port.weights import to_flax, torch_weights

if TYPE_CHECKING:
    from parity.port.table import Declared


@dataclasses.dataclass
class TorchResults:
    """torch's side of one dtype's checks. `submodules`: (torch module, Flax path, its output) in the order torch
    finished them; `gradients` and `buffers` by Flax path (`buffers`: after the forward pass, in train mode);
    `units` (each declared submodule's inputs too) and `lowered` (what a float64 run computed below float64)
    are not saved: a reference is float64 throughout, and has no units check."""

    dtype: str
    outputs: list[tuple[str, np.ndarray]] = dataclasses.field(default_factory=list)
    submodules: list[tuple[str, str, np.ndarray]] = dataclasses.field(default_factory=list)
    loss: float | None = None
    gradients: Weights | None = None
    buffers: Weights = dataclasses.field(default_factory=dict)
    units: list[UnitCall] = dataclasses.field(default_factory=list)
    lowered: Lowered | None = None

    def tensors(self) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """The arrays and metadata a reference file holds of these results."""
        tensors = {f"outputs/{name}": output for name, output in self.outputs}
        tensors.update({f"submodules/{index}": output for index, (_, _, output) in enumerate(self.submodules)})
        tensors.update({f"gradients/{path}": gradient for path, gradient in (self.gradients or {}).items()})
        order = json.dumps([[name, path] for name, path, _ in self.submodules])
        return tensors, {"loss": repr(self.loss), "outputs": json.dumps([n for n, _ in self.outputs]), "calls": order}

    @classmethod
    def read(cls, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> TorchResults:
        """The results a reference file holds (`tensors` as `tensors()` wrote them)."""
        calls = json.loads(metadata["calls"])
        return cls(
            metadata["dtype"],
            [(name, tensors[f"outputs/{name}"]) for name in json.loads(metadata["outputs"])],
            [(name, path, tensors[f"submodules/{index}"]) for index, (name, path) in enumerate(calls)],
            float(metadata["loss"]),
            {name.removeprefix("gradients/"): a for name, a in tensors.items() if name.startswith("gradients/")},
        )


def torch_results(
    table: Declared,
    dtype: str,
    weights: Weights,
    inputs: tuple[np.ndarray, ...],
    labels: np.ndarray | None,
    checks: Sequence[str],
    held: str | None = None,
    caller: str = "check_port",
) -> TorchResults:
    """torch's results for `checks` in `dtype` (its model dropped when it returns). `held`: the dtype the model
    holds its weights in, if not `dtype` (float32 in streaming mode: each float64 copy made as it is used)."""
    port, mode, held = table.port, table.mode, held or dtype
    model = torch_runner.torch_model_holding(port, weights, held, mode, table.device)
    results = TorchResults(dtype, lowered=Lowered() if dtype == "float64" else None)
    lowered = results.lowered
    widened = torch_runner.widened(model) if held != dtype else contextlib.nullcontext()
    with refusal("torch", inputs, caller), widened:  # a refusal: one line, its error the cause
        if "outputs" in checks:
            outputs = torch_runner.torch_forward(port, model, inputs, lowered)
            results.outputs = [(n, transforms.apply(port.output_steps(n), [a], [])[0]) for n, a in outputs]
            buffers = torch_weights(model, table.buffers)  # after that pass
            results.buffers = to_flax(table.buffer_entries, buffers, table.flax_shapes)
        if "submodules" in checks or "units" in checks:  # one pass for both
            calls = torch_runner.torch_calls(port, model, inputs, lowered, keep_inputs="units" in checks)
            entries = {entry.torch[0]: entry for entry in port.submodule_entries}
            if "submodules" in checks:
                results.submodules = [
                    (c.name, entries[c.name].flax[0], transforms.apply(entries[c.name].steps, [c.output], [])[0])
                    for c in calls
                ]
            results.units = calls if "units" in checks else []
        if "gradients" in checks and labels is not None:
            loss_of = torch_runner.port_loss(port, inputs, labels)
            results.loss, gradients = torch_runner.torch_gradients(model, loss_of, lowered)
            results.gradients = to_flax(table.parameter_entries, gradients, table.flax_shapes, gradients=True)
    return results
