"""Recurrent layers with a hand-written backward pass: `SequenceClassifier(backward="manual")`.

Autodiff through `lax.scan` gives a reverse loop that, at every step, also accumulates the weight
gradients (`dW_h += h_{t-1}^T dG_t`, `dW_i += x_t^T dG_t`): small dots and adds per step, the per-op
dispatch XLA:CPU is slow at (jax issues 40150, 36799). Here each direction of each layer is one
`jax.custom_vjp` function whose reverse loop carries only the state gradients (`dh`, and `dc` for an
LSTM) and emits each step's gate gradients; the weight, bias and input gradients come afterwards as
whole-sequence contractions over all time steps.

The forward is the hoisted schedule (`x W_i + b_i` for every row in one matmul, then `h W_h + b_h` per
step) of the same cells as `jax_impl.model`, in PyTorch's arithmetic:
- lstm (gates i, f, g, o): c' = s(f) c + s(i) tanh(g);  h' = s(o) tanh(c')
- rnn: h' = tanh(x W_i + b_i + h W_h + b_h)
- gru (gates r, z, n): n = tanh(x_n + r (h W_hn + b_hn));  h' = (1 - z) n + z h
Kernels are Flax's `<float>[in, gates * hidden]`. A test holds hidden states and gradients (of the
loss and of a random cotangent on every layer's output) to autodiff's in float64, to 1e-12.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array


def lstm_forward_step(carry, projected, hidden_weights):
    """One LSTM step from its input projection (a [batch, hidden] array per gate i, f, g, o, and one
    matmul per gate); saves the activated gates and c after the step."""
    c, h = carry
    i, f, g, o = (x_part + h @ w + b for x_part, (w, b) in zip(projected, hidden_weights, strict=True))
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    new_c = f * c + i * g
    new_h = o * jnp.tanh(new_c)
    return (new_c, new_h), (new_h, (i, f, g, o, new_c))


def lstm_gate_gradients(d_c, d_h, saved, c_before):
    """`(dc carried in, d h_t, saved, c_{t-1}) -> (dc carried out, d of each gate's pre-activation)`."""
    i, f, g, o, c = saved
    tanh_c = jnp.tanh(c)
    d_c = d_c + d_h * o * (1 - tanh_c * tanh_c)
    d_i, d_f, d_g, d_o = d_c * g, d_c * c_before, d_c * i, d_h * tanh_c  # d of the activated gates
    return d_c * f, (d_i * i * (1 - i), d_f * f * (1 - f), d_g * (1 - g * g), d_o * o * (1 - o))


def lstm_backward_step(carry, step, w_h_t):
    """One reverse step: `((dc, dh from t+1), (d output_t, h_{t-1}, h_t, saved, c_{t-1})) -> (carry, dG)`."""
    d_c, d_h_recurrent = carry
    d_output, _, _, saved, c_before = step
    d_c, d_gates = lstm_gate_gradients(d_c, d_output + d_h_recurrent, saved, c_before)
    d_gates = jnp.concatenate(d_gates, axis=-1)  # one [batch, 4 hidden] array: one dot, one store
    return (d_c, d_gates @ w_h_t), (d_gates, None)


def rnn_forward_step(h, projected, hidden_weights):
    ((w, b),) = hidden_weights
    new_h = jnp.tanh(projected[0] + h @ w + b)
    return new_h, (new_h, None)


def rnn_backward_step(d_h_recurrent, step, w_h_t):
    d_output, _, h, _, _ = step
    d_pre = (d_output + d_h_recurrent) * (1 - h * h)
    return d_pre @ w_h_t, (d_pre, None)


def gru_forward_step(h, projected, hidden_weights):
    """One GRU step (PyTorch's: b_hn inside the reset product); saves r, z, n and h W_hn + b_hn."""
    input_r, input_z, input_n = projected
    hidden_r, hidden_z, hidden_n = (h @ w + b for w, b in hidden_weights)
    r, z = jax.nn.sigmoid(input_r + hidden_r), jax.nn.sigmoid(input_z + hidden_z)
    n = jnp.tanh(input_n + r * hidden_n)
    new_h = (1 - z) * n + z * h
    return new_h, (new_h, (r, z, n, hidden_n))


def gru_backward_step(d_h_recurrent, step, w_h_t):
    """The input-side and hidden-side projections get different gradients on n: r scales the hidden one."""
    d_output, h_before, _, (r, z, n, hidden_n), _ = step
    d_h = d_output + d_h_recurrent
    d_n = d_h * (1 - z) * (1 - n * n)
    d_r = d_n * hidden_n * r * (1 - r)
    d_z = d_h * (h_before - n) * z * (1 - z)
    d_hidden = jnp.concatenate([d_r, d_z, d_n * r], axis=-1)
    return d_hidden @ w_h_t + d_h * z, (jnp.concatenate([d_r, d_z, d_n], axis=-1), d_hidden)


STEPS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "lstm": (lstm_forward_step, lstm_backward_step),
    "rnn": (rnn_forward_step, rnn_backward_step),
    "gru": (gru_forward_step, gru_backward_step),
}
GATES = {"lstm": 4, "rnn": 1, "gru": 3}


def _zero_state(cell: str, batch: int, hidden: int, dtype) -> Any:
    zeros = jnp.zeros((batch, hidden), dtype)
    return (zeros, zeros) if cell == "lstm" else zeros


def _gate_blocks(array: Array, cell: str) -> tuple[Array, ...]:
    """`<float>[..., gates * hidden]` -> one `[..., hidden]` array per gate.

    The forward loop takes the gates as separate arrays (one matmul each), never column slices of one
    product: XLA:CPU's fused elementwise loops run several times slower reading slices (docs/performance.md)."""
    return tuple(jnp.split(array, GATES[cell], axis=-1))


def _run_forward(cell: str, unroll: int, x, w_i, b_i, w_h, b_h, keep: bool):
    """Time-major `x <float>[time, batch, in]` -> (h of every step `[time, batch, hidden]`, what backward needs
    or None when `keep` is off: evaluation then stores nothing else)."""
    forward_step = STEPS[cell][0]
    projected = _gate_blocks(x @ w_i + b_i, cell)  # every time step's input projection in one matmul
    hidden_weights = tuple(zip(_gate_blocks(w_h, cell), _gate_blocks(b_h, cell), strict=True))

    def step(state, row):
        state, (h, saved) = forward_step(state, row, hidden_weights)
        return state, (h, saved if keep else None)

    carry = _zero_state(cell, x.shape[1], w_h.shape[0], x.dtype)
    _, (outputs, saved) = jax.lax.scan(step, carry, projected, unroll=unroll)
    return outputs, saved


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def direction(cell: str, unroll: int, x: Array, w_i: Array, b_i: Array, w_h: Array, b_h: Array) -> Array:
    """One direction of one layer, time-major, from zero state: h of every step `<float>[time, batch, hidden]`."""
    return _run_forward(cell, unroll, x, w_i, b_i, w_h, b_h, keep=False)[0]


def _direction_forward(cell, unroll, x, w_i, b_i, w_h, b_h):
    outputs, saved = _run_forward(cell, unroll, x, w_i, b_i, w_h, b_h, keep=True)
    return outputs, (x, w_i, w_h, outputs, saved)


def _shifted(sequence: Array) -> Array:
    """`[time, ...]` -> the value before each step: zero (the initial state) before the first."""
    return jnp.concatenate([jnp.zeros_like(sequence[:1]), sequence[:-1]])


def _direction_backward(cell, unroll, residuals, d_outputs):
    """The reverse loop carries only the state gradients; weights, biases and inputs get theirs afterwards."""
    x, w_i, w_h, outputs, saved = residuals
    before = _shifted(outputs)  # h_{t-1}
    c_before = _shifted(saved[-1]) if cell == "lstm" else None
    backward_step = STEPS[cell][1]
    w_h_t = w_h.T
    zero = _zero_state(cell, x.shape[1], w_h.shape[0], x.dtype)
    _, (d_projected, d_hidden) = jax.lax.scan(
        lambda carry, step: backward_step(carry, step, w_h_t),
        zero,
        (d_outputs, before, outputs, saved, c_before),
        reverse=True,
        unroll=unroll,
    )
    if d_hidden is None:  # lstm, rnn: both projections enter the gates the same way
        d_hidden = d_projected
    return (
        d_projected @ w_i.T,
        jnp.einsum("tbi,tbg->ig", x, d_projected),
        d_projected.sum(axis=(0, 1)),
        jnp.einsum("tbh,tbg->hg", before, d_hidden),
        d_hidden.sum(axis=(0, 1)),
    )


direction.defvjp(_direction_forward, _direction_backward)


def cell_direction(cell_kind: str, cell, sequence: Array, reverse: bool, unroll: int) -> Array:
    """A Flax cell over batch-major `sequence`; reversed: output t is the state after rows T-1..t."""
    time_major = jnp.swapaxes(sequence, 0, 1)
    if reverse:
        time_major = time_major[::-1]
    weights = (cell.dense_i.kernel[...], cell.dense_i.bias[...], cell.dense_h.kernel[...], cell.dense_h.bias[...])
    outputs = direction(cell_kind, unroll, time_major, *weights)
    return jnp.swapaxes(outputs[::-1] if reverse else outputs, 0, 1)


def manual_layer_outputs(model, rows: Array, layers: int | None = None) -> list[Array]:
    """Every layer's output `<float>[batch, time, directions * hidden]` (of the first `layers` only, if
    given), each direction one `direction` call."""
    config = model.config
    outputs, sequence = [], rows
    for layer in list(model.layers)[:layers]:
        if config.bidirectional:
            sequence = jnp.concatenate(
                [
                    cell_direction(config.cell, layer.forward_rnn.cell, sequence, False, model.unroll),
                    cell_direction(config.cell, layer.backward_rnn.cell, sequence, True, model.unroll),
                ],
                axis=-1,
            )
        else:
            sequence = cell_direction(config.cell, layer.cell, sequence, False, model.unroll)
        outputs.append(sequence)
    return outputs
