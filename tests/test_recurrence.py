"""The JAX model's other time-loop schedules (`recurrence=`, `unroll=`) change how it runs, never what it computes."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.experimental.rnn import get_num_params_in_lstm, lstm_ref, unpack_lstm_weights

from common.errors import ConfigError
from common.presets import get_preset
from common.weights import layer_input_size
from jax_impl.convert import from_canonical
from jax_impl.model import RECURRENCES, build_model
from jax_impl.recurrence import pack_lstm, unpack_lstm
from parity.compare import ABSOLUTE_FLOAT64
from parity.suite_checks import random_weights
from tests.conftest import matmul_flops

CONFIGS = {  # small float64 versions of the presets' shapes: stacked, bidirectional, tanh RNN
    "bilstm2": dataclasses.replace(get_preset("bilstm2x128"), hidden_size=16, dtype="float64"),
    "lstm2": dataclasses.replace(get_preset("lstm2"), hidden_size=16, dtype="float64"),
    "birnn2": dataclasses.replace(get_preset("rnn"), num_layers=2, hidden_size=16, bidirectional=True, dtype="float64"),
}
CPU_SCHEDULES = [name for name in RECURRENCES if name not in ("flax", "cudnn")]  # cudnn: see its own tests
SCHEDULES = [{"recurrence": name} for name in CPU_SCHEDULES] + [{"unroll": 2}]


def compiled(model, method: str, rows):
    """`model.method(rows)` as one compiled program (an eager call compiles each loop and primitive apart)."""
    graphdef, state = nnx.split(model)
    return jax.jit(lambda s, x: getattr(nnx.merge(graphdef, s), method)(x))(state, rows)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda options: ",".join(f"{k}={v}" for k, v in options.items()))
@pytest.mark.parametrize("shape", CONFIGS)
def test_every_schedule_computes_every_hidden_state_of_the_default_model(schedule, shape, mnist_rows):
    config = CONFIGS[shape]
    weights = random_weights(config)
    default = from_canonical(weights, config)  # switches JAX to x64 for float64
    scheduled = from_canonical(weights, config, **schedule)
    rows = jnp.asarray(mnist_rows, dtype=jnp.float64)
    pairs = zip(compiled(default, "layer_outputs", rows), compiled(scheduled, "layer_outputs", rows), strict=True)
    for expected, got in pairs:
        gap = float(np.max(np.abs(np.asarray(expected) - np.asarray(got))))
        assert gap <= ABSOLUTE_FLOAT64, f"{schedule} on {shape}: hidden states differ by {gap} (> {ABSOLUTE_FLOAT64})"
    gap = float(np.max(np.abs(np.asarray(compiled(default, "__call__", rows) - compiled(scheduled, "__call__", rows)))))
    assert gap <= ABSOLUTE_FLOAT64, f"{schedule} on {shape}: logits differ by {gap} (> {ABSOLUTE_FLOAT64})"


def test_the_hoisted_schedule_moves_the_input_projection_out_of_the_time_loop():
    """A schedule that silently ran the default loop would pass the test above: this one tells them apart."""
    config = CONFIGS["bilstm2"]

    def flops(model, inside_scan_only):
        graphdef, state = nnx.split(model)
        program = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x))(state, jnp.zeros((1, 28, 28), jnp.float64))
        return matmul_flops(program.jaxpr, inside_scan_only)

    # built abstractly: the programs' matmuls are the subject, no initialiser needs to run
    default = nnx.eval_shape(lambda: build_model(config))
    hoisted = nnx.eval_shape(lambda: build_model(config, recurrence="hoisted"))
    assert flops(hoisted, False) == flops(default, False)  # the same work ...
    # ... of which the input projections (28 x 2 x 4H x input, per layer and direction) left the loop
    moved = 2 * 28 * 2 * 4 * 16 * (28 + 32)
    assert flops(default, True) - flops(hoisted, True) == moved


def test_an_unknown_schedule_or_a_gru_schedule_is_refused_in_one_line():
    with pytest.raises(
        ConfigError, match="recurrence must be one of flax, hoisted, fused-directions, cudnn, got 'warp'"
    ):
        build_model(get_preset("lstm"), recurrence="warp")
    with pytest.raises(ConfigError, match="covers the lstm and rnn cells, not gru"):
        build_model(dataclasses.replace(get_preset("lstm"), cell="gru"), recurrence="hoisted")


LSTM_CONFIGS = {name: config for name, config in CONFIGS.items() if config.cell == "lstm"}


@pytest.mark.parametrize("shape", LSTM_CONFIGS)
def test_cudnn_packing_round_trips_bit_exactly(shape):
    config = LSTM_CONFIGS[shape]
    weights = random_weights(config)
    flat = pack_lstm(weights, config)
    assert [vector.size for vector in flat] == [
        get_num_params_in_lstm(layer_input_size(config, layer), config.hidden_size, 1, config.bidirectional)
        for layer in range(config.num_layers)
    ]
    unpacked = unpack_lstm(flat, config)
    assert set(unpacked) == {name for name in weights if name.startswith("rnn.")}
    assert all(np.array_equal(unpacked[name], weights[name]) for name in unpacked)


@pytest.mark.parametrize("shape", LSTM_CONFIGS)
def test_cudnn_packing_is_the_layout_jax_reads_and_computes_the_models_hidden_states(shape, mnist_rows):
    """Packed weights, unpacked by jax.experimental.rnn itself and run by its reference LSTM (what cuDNN
    computes, runnable on a CPU), give every hidden state of the Flax model (float64, 1e-12)."""
    config = LSTM_CONFIGS[shape]
    weights = random_weights(config)
    model = from_canonical(weights, config)
    sequence = jnp.asarray(mnist_rows, dtype=jnp.float64)
    for layer, (vector, expected) in enumerate(
        zip(pack_lstm(weights, config), model.layer_outputs(sequence), strict=True)
    ):
        inputs = layer_input_size(config, layer)
        w_ih, w_hh, b_ih, b_hh = unpack_lstm_weights(
            jnp.asarray(vector), inputs, config.hidden_size, 1, config.bidirectional
        )
        assert np.array_equal(np.asarray(w_ih[0]), weights[f"rnn.weight_ih_l{layer}"])
        zeros = jnp.zeros((config.num_directions, len(mnist_rows), config.hidden_size), jnp.float64)
        lengths = jnp.full((len(mnist_rows),), 28, jnp.int32)
        sequence, _, _ = lstm_ref(
            sequence,
            zeros,
            zeros,
            w_ih,
            w_hh,
            b_ih,
            b_hh,
            lengths,
            inputs,
            config.hidden_size,
            1,
            0.0,
            config.bidirectional,
        )
        gap = float(np.abs(np.asarray(sequence) - np.asarray(expected)).max())
        assert gap <= ABSOLUTE_FLOAT64, f"layer {layer}: cuDNN's layout computes other hidden states ({gap})"


def test_the_cudnn_schedule_is_refused_off_a_gpu_and_for_other_cells(mnist_rows):
    model = build_model(get_preset("lstm"), recurrence="cudnn")
    with pytest.raises(ConfigError, match="recurrence 'cudnn' needs a GPU"):
        model(jnp.asarray(mnist_rows))
    with pytest.raises(ConfigError, match="covers the lstm cell only, not rnn"):
        build_model(get_preset("rnn"), recurrence="cudnn")
