"""The six presets declared as ports: the sequence classifiers through the same API a user's model goes through.

The weight table is not written a second time: it is read off the JAX trainer's own conversion
(`jax_impl.convert.CELL_TABLE`, `HEAD_TABLE` and the cell of each layer and direction), so the port and
the trainer cannot disagree about which Flax parameter holds which PyTorch tensor (a test holds the
port's conversion to `jax_impl.convert.from_canonical`'s, bit for bit).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from common.config import Config
from common.presets import get_preset
from parity.port.declare import Port
from parity.port.optimizer import Optimizer
from parity.port.transforms import transpose
from parity.port.trees import path_name


def preset_port(preset: str, backward: str = "auto", device: str = "cpu") -> Port:
    """torch_impl's and jax_impl's `SequenceClassifier` for a preset, their weights and
    submodules paired, built as the trainers build them: the Flax side with the recurrence gradient the JAX
    trainer takes on `device` (`backward` "auto": the hand-written one on the CPU, autodiff on a GPU), and each
    side's training step the trainer's own (`torch_impl.train.train_step`, `jax_impl.train.train_step`, the
    step `make_train_chunk` scans)."""
    import jax
    from flax import nnx

    from jax_impl import convert
    from jax_impl import train as jax_train
    from jax_impl.model import build_model as build_flax
    from torch_impl import train as torch_train
    from torch_impl.model import build_model as build_torch

    config = get_preset(preset)
    chosen = jax_train.resolve_backward(backward, jax.devices("gpu" if device == "gpu" else "cpu")[0])
    template = nnx.eval_shape(lambda: build_flax(config))  # its structure alone: no initialisers run
    paths = {id(module): path_name(path) for path, module in nnx.iter_modules(template)}
    weights: list[tuple[Any, ...]] = []
    for suffix, cell in convert.cells(template).items():
        for kind, (linear, attribute, transposed) in convert.CELL_TABLE.items():
            steps = (transpose(),) if transposed else ()
            weights.append((f"rnn.{kind}_{suffix}", f"{paths[id(cell)]}.{linear}.{attribute}", *steps))
    for name, (attribute, transposed) in convert.HEAD_TABLE.items():
        weights.append((name, f"out.{attribute}", *((transpose(),) if transposed else ())))
    # nn.LSTM runs every layer in one call: its output is the last layer's, torch's only hook point; the
    # hand-written backward's forward runs the cells directly (jax_impl.backward), never the layer modules
    submodules = (
        [("out", "out")] if chosen == "manual" else [("rnn", f"layers.{config.num_layers - 1}"), ("out", "out")]
    )
    return Port(
        name=preset,
        torch_model=lambda dtype: build_torch(dataclasses.replace(config, dtype=dtype)),
        flax_model=lambda dtype: build_flax(dataclasses.replace(config, dtype=dtype), backward=chosen),
        weights=weights,
        submodules=submodules,
        torch_step=torch_train.train_step,
        flax_step=jax_train.train_step,
    )


def trainer_optimizer(config: Config) -> Optimizer:
    """The trainers' own optimizers at `config`'s learning rate (`torch_impl.train.make_optimizer`, fused Adam;
    `jax_impl.train.make_optimizer`, optax's Adam), for the trajectory check. JAX's learning rate is an input of
    the compiled step (`optax.inject_hyperparams`), not a constant in it: one program serves every rate."""
    import optax

    from jax_impl import train as jax_train
    from torch_impl import train as torch_train

    def optax_at_rate() -> optax.GradientTransformation:
        def at(learning_rate: Any) -> optax.GradientTransformation:
            return jax_train.make_optimizer(config, learning_rate)

        # the rate in the run's float dtype (JAX's x64 is on for a float64 run): float64's is exactly torch's
        return optax.inject_hyperparams(at)(learning_rate=config.learning_rate)

    return Optimizer(
        "adam",
        config.learning_rate,
        make_torch=lambda model: torch_train.make_optimizer(model, config),
        make_optax=optax_at_rate,
    )
