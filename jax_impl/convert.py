"""Flax NNX model <-> canonical (PyTorch state_dict layout) weights, through one explicit table.

Layouts. PyTorch: `weight_ih <[gates*H, in]>`, `weight_hh <[gates*H, H]>`, `bias_ih`, `bias_hh <[gates*H]>`,
gate blocks stacked along the rows (LSTM i,f,g,o; GRU r,z,n; tanh RNN one block). Flax `nnx.Linear`:
`kernel <[in, out]>` = W.T with the same gate blocks along `out` (OptimizedLSTMCell splits y into i,f,g,o;
TorchGRUCell into r,z,n), `bias <[out]>`.

Every cell of `jax_impl.model` holds PyTorch's two biases (`dense_i.bias` = b_ih, `dense_h.bias` = b_hh)
rather than Flax's usual one summed bias: same function, but only two biases train like PyTorch's (see
the model's docstring). So the mapping is one-to-one, and both round trips are bit-exact.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from flax import nnx

from common.checkpoint import read_model_weights
from common.config import Config
from common.errors import SeqMnistError
from common.weights import Weights, check_weights, layer_suffixes
from jax_impl.model import DTYPES, SequenceClassifier, build_model

# canonical kind -> (Flax Linear inside the cell, its parameter, transposed?)
CELL_TABLE = {
    "weight_ih": ("dense_i", "kernel", True),
    "weight_hh": ("dense_h", "kernel", True),
    "bias_ih": ("dense_i", "bias", False),
    "bias_hh": ("dense_h", "bias", False),
}
HEAD_TABLE = {"out.weight": ("kernel", True), "out.bias": ("bias", False)}


def cells(model: SequenceClassifier) -> dict[str, nnx.RNNCellBase]:
    """Canonical suffix (`l0`, `l0_reverse`, ...) -> the Flax cell holding that layer and direction."""
    found = {}
    for suffix in layer_suffixes(model.config):
        layer = model.layers[int(suffix[1:].split("_")[0])]
        if isinstance(layer, nnx.Bidirectional):
            direction = layer.backward_rnn if suffix.endswith("_reverse") else layer.forward_rnn
            if not isinstance(direction, nnx.RNN):
                raise TypeError(f"layer {suffix}: expected an nnx.RNN per direction, got {type(direction).__name__}")
            found[suffix] = direction.cell
        else:
            found[suffix] = layer.cell
    return found


def parameters(model: SequenceClassifier) -> dict[str, tuple[nnx.Param, bool]]:
    """Canonical name -> (the Flax parameter holding it, whether it is stored transposed)."""
    table = {}
    for suffix, cell in cells(model).items():
        for kind, (linear, attribute, transposed) in CELL_TABLE.items():
            table[f"rnn.{kind}_{suffix}"] = (getattr(getattr(cell, linear), attribute), transposed)
    for name, (attribute, transposed) in HEAD_TABLE.items():
        table[name] = (getattr(model.out, attribute), transposed)
    return table


def to_canonical(model: SequenceClassifier) -> Weights:
    """The model's parameters in canonical layout, as NumPy arrays (copies)."""
    weights = {}
    for name, (parameter, transposed) in parameters(model).items():
        array = np.asarray(parameter.get_value())
        weights[name] = np.ascontiguousarray(array.T if transposed else array)
    return weights


def from_canonical(weights: Weights, config: Config, **model_options) -> SequenceClassifier:
    """A Flax model holding `weights` (checked name by name against the config first).

    `model_options` (`recurrence`, `unroll`, `backward`) go to `build_model`: how the time loop and its
    gradient are scheduled.
    """
    check_weights(weights, config, "canonical weights")
    model = nnx.eval_shape(lambda: build_model(config, **model_options))  # structure only: values set below
    for name, (parameter, transposed) in parameters(model).items():
        array = weights[name].T if transposed else weights[name]
        # a transfer: jnp.asarray would run a staged copy that XLA compiles for each new shape and dtype
        parameter.set_value(jax.device_put(np.ascontiguousarray(array, dtype=DTYPES[config.dtype])))
    return model


def read_weights(path: str, preset: Config | None) -> tuple[Weights, Config]:
    """A canonical .safetensors file; tutorial pickles need torch, so they go through torch_impl.convert."""
    if Path(path).suffix in (".pkl", ".pt", ".pth", ".bin"):
        raise SeqMnistError(
            f"{path}: a PyTorch pickle; convert it first: python -m torch_impl.convert {path} "
            "--preset NAME --out FILE.safetensors"
        )
    return read_model_weights(path, preset)
