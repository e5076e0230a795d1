"""Flax NNX model <-> canonical (PyTorch state_dict layout) weights, through one explicit table.

Layouts. PyTorch: `weight_ih <[gates*H, in]>`, `weight_hh <[gates*H, H]>`, biases `<[gates*H]>`, gate
blocks stacked in rows (LSTM i,f,g,o; GRU r,z,n). Flax `nnx.Linear`: `kernel <[in, out]>` = W.T, with
the same gate blocks along `out` (OptimizedLSTMCell splits i,f,g,o; TorchGRUCell r,z,n).

Biases. PyTorch's LSTM and tanh RNN keep two biases that are only ever added (`b_ih + b_hh`); Flax keeps
one (OptimizedLSTMCell: `dense_h.bias`; SimpleCell: `dense_i.bias`). So canonical -> Flax stores the sum,
and Flax -> canonical writes the sum into `bias_ih` and zeros into `bias_hh`: same function, and
Flax -> canonical -> Flax is bit-exact. The GRU keeps both (`b_hn` sits inside `r * (...)`), unsummed.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from common.config import Config
from common.weights import Weights, check_weights, layer_suffixes
from jax_impl.model import SequenceClassifier, build_model

# cell -> (flax path of the input kernel's bias, of the hidden kernel's bias); None = that Linear has none.
BIAS_PLACES = {
    "lstm": (None, "dense_h"),  # OptimizedLSTMCell: one bias, hidden side  -> b_ih + b_hh
    "rnn": ("dense_i", None),  # SimpleCell: one bias, input side           -> b_ih + b_hh
    "gru": ("dense_i", "dense_h"),  # TorchGRUCell: both, kept apart        -> b_ih, b_hh
}


def cells(model: SequenceClassifier) -> dict[str, nnx.Module]:
    """Canonical suffix (`l0`, `l0_reverse`, ...) -> the Flax cell holding that layer and direction."""
    found = {}
    for suffix in layer_suffixes(model.config):
        layer = model.layers[int(suffix[1:].split("_")[0])]
        if model.config.bidirectional:
            rnn = layer.backward_rnn if suffix.endswith("_reverse") else layer.forward_rnn
        else:
            rnn = layer
        found[suffix] = rnn.cell
    return found


def to_canonical(model: SequenceClassifier) -> Weights:
    """The model's parameters in canonical layout, as NumPy arrays (summed biases: see the module doc)."""
    config, weights = model.config, {}
    input_bias, hidden_bias = BIAS_PLACES[config.cell]
    for suffix, cell in cells(model).items():
        weights[f"rnn.weight_ih_{suffix}"] = _numpy(cell.dense_i.kernel).T.copy()
        weights[f"rnn.weight_hh_{suffix}"] = _numpy(cell.dense_h.kernel).T.copy()
        if config.cell == "gru":
            weights[f"rnn.bias_ih_{suffix}"] = _numpy(cell.dense_i.bias).copy()
            weights[f"rnn.bias_hh_{suffix}"] = _numpy(cell.dense_h.bias).copy()
        else:
            summed = _numpy(getattr(cell, input_bias or hidden_bias).bias).copy()
            weights[f"rnn.bias_ih_{suffix}"] = summed
            weights[f"rnn.bias_hh_{suffix}"] = np.zeros_like(summed)
    weights["out.weight"] = _numpy(model.out.kernel).T.copy()
    weights["out.bias"] = _numpy(model.out.bias).copy()
    return weights


def from_canonical(weights: Weights, config: Config) -> SequenceClassifier:
    """A Flax model holding `weights` (checked name by name against the config first)."""
    check_weights(weights, config, "canonical weights")
    model = build_model(config)
    input_bias, hidden_bias = BIAS_PLACES[config.cell]
    for suffix, cell in cells(model).items():
        _assign(cell.dense_i.kernel, weights[f"rnn.weight_ih_{suffix}"].T)
        _assign(cell.dense_h.kernel, weights[f"rnn.weight_hh_{suffix}"].T)
        bias_ih, bias_hh = weights[f"rnn.bias_ih_{suffix}"], weights[f"rnn.bias_hh_{suffix}"]
        if config.cell == "gru":
            _assign(cell.dense_i.bias, bias_ih)
            _assign(cell.dense_h.bias, bias_hh)
        else:
            _assign(getattr(cell, input_bias or hidden_bias).bias, bias_ih + bias_hh)
    _assign(model.out.kernel, weights["out.weight"].T)
    _assign(model.out.bias, weights["out.bias"])
    return model


def _numpy(parameter: nnx.Param) -> np.ndarray:
    return np.asarray(parameter.value)


def _assign(parameter: nnx.Param, array: np.ndarray) -> None:
    if parameter.value.shape != array.shape:  # unreachable after check_weights unless the table is wrong
        raise ValueError(f"internal: Flax parameter shape {parameter.value.shape} != {array.shape}")
    parameter.value = jnp.asarray(np.ascontiguousarray(array), dtype=parameter.value.dtype)
