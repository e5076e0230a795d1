"""An independent forward pass of the canonical model in plain NumPy, float64, from PyTorch's documented equations.

Written from the `torch.nn.RNN` / `LSTM` / `GRU` documentation, not from either port, so that a mistake
shared by both conversions (a gate order, a transpose, a bias) cannot hide behind their agreement.
"""

from __future__ import annotations

import numpy as np

from common.config import Config
from common.weights import Weights


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


State = np.ndarray | tuple[np.ndarray, np.ndarray]  # h, or (h, c) for an LSTM


def cell_step(
    cell: str, x: np.ndarray, state: State, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray, b_hh: np.ndarray
) -> tuple[State, np.ndarray]:
    """One time step; `state` is h (rnn, gru) or (h, c) (lstm). Returns (new state, h)."""
    if cell == "rnn":  # h' = tanh(W_ih x + b_ih + W_hh h + b_hh)
        h = np.tanh(x @ w_ih.T + b_ih + state @ w_hh.T + b_hh)
        return h, h
    if cell == "lstm":  # gates stacked i, f, g, o
        h, c = state
        i, f, g, o = np.split(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        return (h, c), h
    # gru: gates stacked r, z, n; b_hn stays inside the reset product
    x_r, x_z, x_n = np.split(x @ w_ih.T + b_ih, 3, axis=-1)
    h_r, h_z, h_n = np.split(state @ w_hh.T + b_hh, 3, axis=-1)
    r, z = sigmoid(x_r + h_r), sigmoid(x_z + h_z)
    n = np.tanh(x_n + r * h_n)
    h = (1.0 - z) * n + z * state
    return h, h


def run_direction(config: Config, weights: Weights, suffix: str, sequence: np.ndarray, reverse: bool) -> np.ndarray:
    """h at every step `<f64>[batch, time, hidden]`, in input order, for one layer and direction."""
    params = [
        weights[f"rnn.{kind}_{suffix}"].astype(np.float64) for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    ]
    batch, steps = sequence.shape[:2]
    zeros = np.zeros((batch, config.hidden_size))
    state = (zeros, zeros) if config.cell == "lstm" else zeros
    outputs = np.empty((batch, steps, config.hidden_size))
    for t in range(steps - 1, -1, -1) if reverse else range(steps):
        state, outputs[:, t] = cell_step(config.cell, sequence[:, t], state, *params)
    return outputs


def hidden_states(config: Config, weights: Weights, rows: np.ndarray) -> list[np.ndarray]:
    """Every layer's output `<f64>[batch, time, directions * hidden]`, as `nn.LSTM(...)`'s output per layer."""
    sequence, layers = np.asarray(rows, dtype=np.float64), []
    for layer in range(config.num_layers):
        directions = [run_direction(config, weights, f"l{layer}", sequence, reverse=False)]
        if config.bidirectional:
            directions.append(run_direction(config, weights, f"l{layer}_reverse", sequence, reverse=True))
        sequence = np.concatenate(directions, axis=-1)
        layers.append(sequence)
    return layers


def logits(config: Config, weights: Weights, rows: np.ndarray) -> np.ndarray:
    """`<f64>[batch, classes]`: the head on the last layer's output at the last time step."""
    last = hidden_states(config, weights, rows)[-1][:, -1, :]
    return last @ weights["out.weight"].astype(np.float64).T + weights["out.bias"].astype(np.float64)
