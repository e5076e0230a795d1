"""The six presets declared as ports: the sequence classifiers through the same API a user's model goes through.

The weight table is not written a second time: it is read off the JAX trainer's own conversion
(`jax_impl.convert.CELL_TABLE`, `HEAD_TABLE` and the cell of each layer and direction), so the port and
the trainer cannot disagree about which Flax parameter holds which PyTorch tensor (a test holds the
port's conversion to `jax_impl.convert.from_canonical`'s, bit for bit).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from common.presets import get_preset
from parity.port.declare import Port
from parity.port.transforms import transpose
from parity.port.weights import path_name


def preset_port(preset: str) -> Port:
    """torch_impl's and jax_impl's `SequenceClassifier` for a preset, their weights and submodules paired."""
    from flax import nnx

    from jax_impl import convert
    from jax_impl.model import build_model as build_flax
    from torch_impl.model import build_model as build_torch

    config = get_preset(preset)
    template = build_flax(config)
    paths = {id(module): path_name(path) for path, module in nnx.iter_modules(template)}
    weights: list[tuple[Any, ...]] = []
    for suffix, cell in convert.cells(template).items():
        for kind, (linear, attribute, transposed) in convert.CELL_TABLE.items():
            steps = (transpose(),) if transposed else ()
            weights.append((f"rnn.{kind}_{suffix}", f"{paths[id(cell)]}.{linear}.{attribute}", *steps))
    for name, (attribute, transposed) in convert.HEAD_TABLE.items():
        weights.append((name, f"out.{attribute}", *((transpose(),) if transposed else ())))
    return Port(
        name=preset,
        torch_model=lambda dtype: build_torch(dataclasses.replace(config, dtype=dtype)),
        flax_model=lambda dtype: build_flax(dataclasses.replace(config, dtype=dtype)),
        weights=weights,
        # nn.LSTM runs every layer in one call: its output is the last layer's, torch's only hook point
        submodules=[("rnn", f"layers.{config.num_layers - 1}"), ("out", "out")],
    )
