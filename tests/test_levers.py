"""The JAX speed levers of `python -m parity.bench --levers` change how the recurrence is scheduled, never its math."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from common.presets import get_preset
from jax_impl.convert import from_canonical
from parity.checks import random_weights
from parity.levers import LAYER_OUTPUTS_LEVERS, with_layer_outputs

CONFIGS = {  # small float64 versions of the presets' shapes: stacked, bidirectional, tanh RNN
    "bilstm2": dataclasses.replace(get_preset("bilstm2x128"), hidden_size=16, dtype="float64"),
    "lstm2": dataclasses.replace(get_preset("lstm2"), hidden_size=16, dtype="float64"),
    "birnn2": dataclasses.replace(get_preset("rnn"), num_layers=2, hidden_size=16, bidirectional=True,
                                  dtype="float64"),
}


@pytest.mark.parametrize("lever", LAYER_OUTPUTS_LEVERS)
@pytest.mark.parametrize("shape", CONFIGS)
def test_layer_output_levers_compute_every_hidden_state_of_the_default_model(lever, shape, mnist_rows):
    config = CONFIGS[shape]
    weights = random_weights(config)
    default = from_canonical(weights, config)  # switches JAX to x64 for float64
    levered = with_layer_outputs(from_canonical(weights, config), lever)
    rows = jnp.asarray(mnist_rows, dtype=jnp.float64)
    assert type(levered).layer_outputs is LAYER_OUTPUTS_LEVERS[lever]
    for expected, got in zip(default.layer_outputs(rows), levered.layer_outputs(rows), strict=True):
        gap = float(np.max(np.abs(np.asarray(expected) - np.asarray(got))))
        assert gap <= 1e-12, f"{lever} on {shape}: hidden states differ by {gap} (>= 1e-12)"
    gap = float(np.max(np.abs(np.asarray(default(rows)) - np.asarray(levered(rows)))))
    assert gap <= 1e-12, f"{lever} on {shape}: logits differ by {gap} (>= 1e-12)"
