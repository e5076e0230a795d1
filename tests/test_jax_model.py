"""The Flax model: shapes, last-step head, bidirectional alignment, identity init, exact weight conversion."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.errors import SeqMnistError
from common.presets import PRESETS, get_preset
from common.weights import canonical_shapes, initial_weights
from jax_impl.convert import cells, from_canonical, to_canonical
from jax_impl.model import build_model
from parity import oracle
from parity.compare import output_tolerance
from parity.suite_checks import random_weights

GRU = dataclasses.replace(get_preset("bilstm"), cell="gru", num_layers=2)


@pytest.mark.parametrize("name", PRESETS)
def test_logits_and_every_layers_outputs_have_the_right_shapes(name, mnist_rows):
    """Shapes alone: the model built and run abstractly (`jax.eval_shape` traces every line of both calls and
    compiles nothing); the other tests here compute values."""
    config = get_preset(name)
    logits, outputs = jax.eval_shape(
        lambda rows: (build_model(config)(rows), build_model(config).layer_outputs(rows)), mnist_rows
    )
    assert logits.shape == (32, 10)
    assert [output.shape for output in outputs] == [
        (32, 28, config.num_directions * config.hidden_size)
    ] * config.num_layers


def test_head_reads_the_last_time_step_only(mnist_rows):
    model = build_model(get_preset("lstm2"))
    rows = jnp.asarray(mnist_rows)
    last = model.layer_outputs(rows)[-1][:, -1, :]
    np.testing.assert_array_equal(model(rows), model.out(last))
    assert not np.allclose(model(rows), model(rows.at[:, -1].add(0.5)))


def test_the_heads_backward_half_has_read_only_the_last_row(mnist_rows):
    model = build_model(get_preset("bilstm"))
    full = model.layer_outputs(jnp.asarray(mnist_rows))[0]
    last_row_only = model.layer_outputs(jnp.asarray(mnist_rows[:, -1:]))[0]
    np.testing.assert_allclose(full[:, -1, 64:], last_row_only[:, 0, 64:], rtol=1e-6, atol=1e-6)
    assert not np.allclose(full[:, -1, :64], last_row_only[:, 0, :64], atol=1e-3)
    # and its forward half is the forward state after all 28 rows: step 0 of the backward half read all of them
    backward_first = model.layer_outputs(jnp.asarray(mnist_rows[:, :1]))[0]
    assert not np.allclose(full[:, 0, 64:], backward_first[:, 0, 64:], atol=1e-3)


def test_native_identity_init_sets_recurrent_kernels_to_identity():
    model = build_model(get_preset("rnn"))
    for cell in cells(model).values():
        np.testing.assert_array_equal(cell.dense_h.kernel.get_value(), np.eye(150, dtype=np.float32))
    lstm = build_model(dataclasses.replace(get_preset("lstm"), recurrent_init="identity"))
    np.testing.assert_array_equal(to_canonical(lstm)["rnn.weight_hh_l0"], np.tile(np.eye(64, dtype=np.float32), (4, 1)))


@pytest.mark.parametrize("name", [*PRESETS, "gru"])
def test_flax_to_canonical_to_flax_is_bit_exact(name):
    config = GRU if name == "gru" else get_preset(name)
    model = build_model(config, native_seed=3)
    canonical = to_canonical(model)
    assert {k: v.shape for k, v in canonical.items()} == canonical_shapes(config)
    again = to_canonical(from_canonical(canonical, config))
    assert all(np.array_equal(again[k], canonical[k]) for k in canonical)
    before = jax.tree.leaves(jax.tree.map(np.asarray, model))
    after = jax.tree.leaves(jax.tree.map(np.asarray, from_canonical(canonical, config)))
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


@pytest.mark.parametrize("name", ["lstm", "rnn", "gru"])
def test_canonical_to_flax_to_canonical_is_bit_exact_and_keeps_both_biases(name):
    config = GRU if name == "gru" else get_preset(name)
    weights = random_weights(config)
    back = to_canonical(from_canonical(weights, config))
    assert all(np.array_equal(back[k], weights[k]) for k in weights)
    cell = cells(from_canonical(weights, config))["l0"]
    np.testing.assert_array_equal(cell.dense_i.bias.get_value(), weights["rnn.bias_ih_l0"])
    np.testing.assert_array_equal(cell.dense_h.bias.get_value(), weights["rnn.bias_hh_l0"])


@pytest.mark.parametrize("name", [*PRESETS, "gru"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_canonical_weights_reproduce_the_numpy_oracle(name, dtype, mnist_rows):
    config = dataclasses.replace(GRU if name == "gru" else get_preset(name), dtype=dtype)
    weights = random_weights(config)
    logits = np.asarray(from_canonical(weights, config)(jnp.asarray(mnist_rows.astype(dtype))))
    assert logits.dtype == np.dtype(dtype)
    expected = oracle.logits(config, weights, mnist_rows)
    tolerance, _ = output_tolerance(dtype, max(1.0, np.abs(expected).max()))
    assert np.abs(logits - expected).max() <= tolerance


def test_from_canonical_names_a_mis_shaped_tensor():
    config = get_preset("bilstm")
    weights = initial_weights(config)
    weights["rnn.weight_hh_l0_reverse"] = weights["rnn.weight_hh_l0_reverse"][:, :32]
    with pytest.raises(SeqMnistError, match=r"rnn.weight_hh_l0_reverse has shape \(256, 32\), expected \(256, 64\)"):
        from_canonical(weights, config)
