"""Other schedules of the same recurrence, for `SequenceClassifier(recurrence=...)`: same math, other loops.

`"flax"` (the default) is Flax's own `nnx.RNN` / `nnx.Bidirectional`. The two here change how the time
loop is scheduled, never what it computes (a test holds both to the default's hidden states, float64,
1e-12); `python -m bench --levers` times them:

- `"hoisted"`: each layer's input projection `x W_i + b_i` for all 28 rows in one matmul before the
  time scan, which then computes only `h W_h + b_h` per step;
- `"fused-directions"`: a bidirectional layer's two directions stepped in one `lax.scan` (two dots a
  step) instead of two scans;
- `"cudnn"` (LSTM on a GPU only): each layer through cuDNN's fused LSTM (`jax.experimental.rnn.lstm`),
  whose flat weight vector holds PyTorch's gate order and two biases: `pack_lstm` builds it.

PyTorch has no counterpart: its recurrence is one library kernel (oneDNN on a CPU, cuDNN on a GPU).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from common.config import Config
from common.errors import ConfigError
from common.weights import Weights, layer_input_size


def recurrence_step(config: Config, cell) -> Callable:
    """`(carry, x W_i + b_i) -> (carry, h)`: one time step of `cell` given its input projection."""

    def lstm_step(carry, x_part):
        c, h = carry
        i, f, g, o = jnp.split(x_part + cell.dense_h(h), 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (c, h), h

    def rnn_step(h, x_part):
        h = jnp.tanh(x_part + cell.dense_h(h))
        return h, h

    return lstm_step if config.cell == "lstm" else rnn_step


def hoisted_layer_outputs(model, rows: jax.Array, zero_carry: Callable) -> list[jax.Array]:
    """Every layer's output, each layer's input projection taken out of its time scan."""
    config = model.config

    def direction(cell, sequence, reverse: bool):
        projected = jnp.swapaxes(cell.dense_i(sequence), 0, 1)  # [time, batch, gates * hidden]
        carry = zero_carry(config, sequence.shape[0])
        _, outputs = jax.lax.scan(recurrence_step(config, cell), carry, projected, reverse=reverse)
        return jnp.swapaxes(outputs, 0, 1)

    outputs, sequence = [], rows
    for layer in model.layers:
        if config.bidirectional:
            sequence = jnp.concatenate(
                [
                    direction(layer.forward_rnn.cell, sequence, False),
                    direction(layer.backward_rnn.cell, sequence, True),
                ],
                axis=-1,
            )
        else:
            sequence = direction(layer.cell, sequence, False)
        outputs.append(sequence)
    return outputs


def fused_directions_layer_outputs(model, rows: jax.Array, zero_carry: Callable) -> list[jax.Array]:
    """Every layer's output, both directions of a bidirectional layer in one time scan.

    Scan step s feeds row s to the forward cell and row T-1-s to the backward cell; the backward outputs are
    then put back in row order, so position t holds its state after rows T-1..t (PyTorch's convention).
    """
    config = model.config
    outputs, sequence = [], rows
    for layer in model.layers:
        if not config.bidirectional:
            sequence = layer(sequence, initial_carry=zero_carry(config, rows.shape[0]))
            outputs.append(sequence)
            continue
        forward, backward = layer.forward_rnn.cell, layer.backward_rnn.cell
        forward_step, backward_step = recurrence_step(config, forward), recurrence_step(config, backward)

        def both(
            carry, rows_pair, forward=forward, backward=backward, forward_step=forward_step, backward_step=backward_step
        ):
            forward_carry, forward_h = forward_step(carry[0], forward.dense_i(rows_pair[0]))
            backward_carry, backward_h = backward_step(carry[1], backward.dense_i(rows_pair[1]))
            return (forward_carry, backward_carry), (forward_h, backward_h)

        time_major = jnp.swapaxes(sequence, 0, 1)  # [time, batch, features]
        zeros = zero_carry(config, rows.shape[0])
        _, (forward_h, backward_h) = jax.lax.scan(both, (zeros, zeros), (time_major, time_major[::-1]))
        sequence = jnp.swapaxes(jnp.concatenate([forward_h, backward_h[::-1]], axis=-1), 0, 1)
        outputs.append(sequence)
    return outputs


def cudnn_blocks(config: Config, layer: int) -> list[tuple[str, tuple[int, ...]]]:
    """(canonical name, shape) of one layer's tensors in cuDNN's flat order: every direction's W_ih, W_hh,
    then every direction's b_ih, b_hh (`jax.experimental.rnn`'s layout; gates i, f, g, o, as PyTorch's)."""
    suffixes = [f"l{layer}", f"l{layer}_reverse"][: config.num_directions]
    gates, inputs = 4 * config.hidden_size, layer_input_size(config, layer)
    matrices = [
        (f"rnn.{kind}_{suffix}", (gates, width))
        for suffix in suffixes
        for kind, width in (("weight_ih", inputs), ("weight_hh", config.hidden_size))
    ]
    return matrices + [(f"rnn.{kind}_{suffix}", (gates,)) for suffix in suffixes for kind in ("bias_ih", "bias_hh")]


def pack_lstm(weights: Weights, config: Config) -> list[np.ndarray]:
    """Canonical LSTM weights -> one flat cuDNN weight vector per layer (each layer runs as its own call)."""
    return [
        np.concatenate([weights[name].ravel() for name, _ in cudnn_blocks(config, layer)])
        for layer in range(config.num_layers)
    ]


def unpack_lstm(flat: list[np.ndarray], config: Config) -> Weights:
    """The inverse of `pack_lstm`: the recurrent tensors under their canonical names."""
    weights: Weights = {}
    for layer, vector in enumerate(flat):
        offset = 0
        for name, shape in cudnn_blocks(config, layer):
            size = int(np.prod(shape))
            weights[name] = np.asarray(vector[offset : offset + size]).reshape(shape)
            offset += size
        if offset != len(vector):
            raise ConfigError(f"cuDNN weights of layer {layer}: {len(vector)} values, the config needs {offset}")
    return weights


def cudnn_layer_outputs(model, rows: jax.Array, zero_carry: Callable) -> list[jax.Array]:
    """Every layer's output through cuDNN's LSTM (GPU only), its flat weights packed from the Flax cells."""
    from jax.experimental import rnn

    config = model.config
    if jax.devices()[0].platform != "gpu":
        raise ConfigError("recurrence 'cudnn' needs a GPU (jax.experimental.rnn.lstm is cuDNN's)")
    outputs, sequence = [], rows
    for layer_index, layer in enumerate(model.layers):
        cells = [layer.forward_rnn.cell, layer.backward_rnn.cell] if config.bidirectional else [layer.cell]
        matrices = [linear.kernel[...].T for cell in cells for linear in (cell.dense_i, cell.dense_h)]
        biases = [linear.bias[...] for cell in cells for linear in (cell.dense_i, cell.dense_h)]
        flat = jnp.concatenate([jnp.ravel(part) for part in matrices + biases])
        zeros = jnp.zeros((config.num_directions, rows.shape[0], config.hidden_size), sequence.dtype)
        lengths = jnp.full((rows.shape[0],), rows.shape[1], jnp.int32)
        sequence, _, _ = rnn.lstm(
            sequence,
            zeros,
            zeros,
            flat,
            lengths,
            input_size=layer_input_size(config, layer_index),
            hidden_size=config.hidden_size,
            num_layers=1,
            dropout=0.0,
            bidirectional=config.bidirectional,
            precision=jax.lax.Precision.HIGHEST,
        )
        outputs.append(sequence)
    return outputs


SCHEDULES = {
    "hoisted": hoisted_layer_outputs,
    "fused-directions": fused_directions_layer_outputs,
    "cudnn": cudnn_layer_outputs,
}
