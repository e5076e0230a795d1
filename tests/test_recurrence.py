"""The JAX model's other time-loop schedules (`recurrence=`, `unroll=`) change how it runs, never what it computes."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from common.errors import ConfigError
from common.presets import get_preset
from jax_impl.convert import from_canonical
from jax_impl.model import RECURRENCES, build_model
from parity.checks import random_weights
from tests.conftest import matmul_flops

CONFIGS = {  # small float64 versions of the presets' shapes: stacked, bidirectional, tanh RNN
    "bilstm2": dataclasses.replace(get_preset("bilstm2x128"), hidden_size=16, dtype="float64"),
    "lstm2": dataclasses.replace(get_preset("lstm2"), hidden_size=16, dtype="float64"),
    "birnn2": dataclasses.replace(get_preset("rnn"), num_layers=2, hidden_size=16, bidirectional=True,
                                  dtype="float64"),
}
SCHEDULES = [{"recurrence": name} for name in RECURRENCES if name != "flax"] + [{"unroll": 2}]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda options: ",".join(f"{k}={v}" for k, v in options.items()))
@pytest.mark.parametrize("shape", CONFIGS)
def test_every_schedule_computes_every_hidden_state_of_the_default_model(schedule, shape, mnist_rows):
    config = CONFIGS[shape]
    weights = random_weights(config)
    default = from_canonical(weights, config)  # switches JAX to x64 for float64
    scheduled = from_canonical(weights, config, **schedule)
    rows = jnp.asarray(mnist_rows, dtype=jnp.float64)
    for expected, got in zip(default.layer_outputs(rows), scheduled.layer_outputs(rows), strict=True):
        gap = float(np.max(np.abs(np.asarray(expected) - np.asarray(got))))
        assert gap <= 1e-12, f"{schedule} on {shape}: hidden states differ by {gap} (>= 1e-12)"
    gap = float(np.max(np.abs(np.asarray(default(rows)) - np.asarray(scheduled(rows)))))
    assert gap <= 1e-12, f"{schedule} on {shape}: logits differ by {gap} (>= 1e-12)"


def test_the_hoisted_schedule_moves_the_input_projection_out_of_the_time_loop():
    """A schedule that silently ran the default loop would pass the test above: this one tells them apart."""
    config = CONFIGS["bilstm2"]

    def flops(model, inside_scan_only):
        graphdef, state = nnx.split(model)
        program = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x))(state, jnp.zeros((1, 28, 28), jnp.float64))
        return matmul_flops(program.jaxpr, inside_scan_only)

    default, hoisted = build_model(config), build_model(config, recurrence="hoisted")
    assert flops(hoisted, False) == flops(default, False)  # the same work ...
    # ... of which the input projections (28 x 2 x 4H x input, per layer and direction) left the loop
    moved = 2 * 28 * 2 * 4 * 16 * (28 + 32)
    assert flops(default, True) - flops(hoisted, True) == moved


def test_an_unknown_schedule_or_a_gru_schedule_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="recurrence must be one of flax, hoisted, fused-directions, got 'warp'"):
        build_model(get_preset("lstm"), recurrence="warp")
    with pytest.raises(ConfigError, match="covers the lstm and rnn cells, not gru"):
        build_model(dataclasses.replace(get_preset("lstm"), cell="gru"), recurrence="hoisted")
