"""A port's table checked against both models before anything runs: `Declared` (the entries, both models'
shapes, which torch entries are buffers, what is left unported, the ties, the mode), which every check reads."""

from __future__ import annotations

import dataclasses

from parity.port.building import build
from parity.port.declare import Entry, Port, PortError, check_declaration
from parity.port.transforms import Shape
from parity.port.weights import Start, flax_dropouts, flax_shapes, flax_types


@dataclasses.dataclass(frozen=True)
class Declared:
    """A port's table, checked against both models, and the mode and device ("cpu" or "gpu") the checks run in."""

    port: Port
    entries: list[Entry]
    torch_shapes: dict[str, Shape]
    flax_shapes: dict[str, Shape]
    buffers: frozenset[str]  # torch state_dict entries that are buffers
    not_ported: list[str]
    mode: str = "eval"
    ties: dict[str, str] = dataclasses.field(default_factory=dict)  # a tied name -> the first name of its tensor
    device: str = "cpu"

    @property
    def parameter_entries(self) -> list[Entry]:
        return [entry for entry in self.entries if not set(entry.torch) & self.buffers]

    @property
    def buffer_entries(self) -> list[Entry]:
        return [entry for entry in self.entries if set(entry.torch) & self.buffers]


def declared(port: Port, start: Start, mode: str, device: str = "cpu") -> Declared:
    """The weight table checked against the models before anything runs (else PortError). The Flax model is
    built abstractly (`nnx.eval_shape`: shapes, no weights) where its factory allows."""
    from flax import nnx

    try:
        flax_model = nnx.eval_shape(lambda: build(port.flax_model, "float32"))
    except Exception:  # a factory that computes on values: built for real, its own error raised there
        flax_model = build(port.flax_model, "float32")
    entries, shapes = port.entries, flax_shapes(flax_model)
    torch_shapes = {n: a.shape for n, a in start.weights.items()}
    types = flax_types(flax_model)
    left = check_declaration(entries, torch_shapes, shapes, start.buffers, types, port.not_ported, start.ties)
    if mode == "train":
        active = start.dropouts + [f"flax {found}" for found in flax_dropouts(flax_model)]
        if active:
            raise PortError(
                f"mode='train': dropout is on ({'; '.join(active[:3])}{'; ...' if len(active) > 3 else ''}); its "
                "random masks cannot match across frameworks: build both models with dropout 0 for a train-mode check"
            )
    return Declared(port, entries, torch_shapes, shapes, start.buffers, left, mode, start.ties, device)
