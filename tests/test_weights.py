"""The canonical weight format: names, initial values, safetensors files, and every way a file can be wrong."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save

from common.errors import SeqMnistError
from common.presets import PRESETS, get_preset
from common.weights import canonical_shapes, initial_weights, load_weights, save_weights


def test_canonical_names_for_a_two_layer_bidirectional_lstm():
    shapes = canonical_shapes(get_preset("bilstm2x128"))
    assert shapes["rnn.weight_ih_l0"] == (512, 28) and shapes["rnn.weight_ih_l1_reverse"] == (512, 256)
    assert shapes["rnn.weight_hh_l1"] == (512, 128) and shapes["rnn.bias_hh_l0_reverse"] == (512,)
    assert shapes["out.weight"] == (10, 256) and len(shapes) == 2 * 2 * 4 + 2


def test_initial_weights_are_seeded_and_follow_pytorchs_bounds():
    config = get_preset("bilstm")
    first, again, other = initial_weights(config), initial_weights(config), initial_weights(config, seed=1)
    assert all(np.array_equal(first[name], again[name]) for name in first)
    assert not np.array_equal(first["rnn.weight_ih_l0"], other["rnn.weight_ih_l0"])
    assert all(array.dtype == np.float32 for array in first.values())
    bound = 1 / math.sqrt(64)
    assert 0.9 * bound < np.abs(first["rnn.weight_hh_l0"]).max() <= bound
    assert 0.9 / math.sqrt(128) < np.abs(first["out.weight"]).max() <= 1 / math.sqrt(128)


def test_identity_init_sets_every_recurrent_gate_block_to_the_identity():
    weights = initial_weights(get_preset("rnn"))
    for layer in range(3):
        np.testing.assert_array_equal(weights[f"rnn.weight_hh_l{layer}"], np.eye(150, dtype=np.float32))
    assert np.abs(weights["rnn.weight_ih_l0"]).max() > 0  # input weights keep their uniform draw
    lstm = initial_weights(dataclasses.replace(get_preset("lstm"), recurrent_init="identity"))
    np.testing.assert_array_equal(lstm["rnn.weight_hh_l0"], np.tile(np.eye(64, dtype=np.float32), (4, 1)))


@pytest.mark.parametrize("name", PRESETS)
def test_save_load_round_trip_is_exact_and_deterministic(tmp_path, name):
    config = dataclasses.replace(get_preset(name), dtype="float64")
    weights = initial_weights(config)
    save_weights(tmp_path / "a.safetensors", weights, config)
    save_weights(tmp_path / "b.safetensors", dict(reversed(list(weights.items()))), config)
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    loaded, loaded_config = load_weights(tmp_path / "a.safetensors")
    assert loaded_config == config
    assert all(np.array_equal(loaded[key], weights[key]) and loaded[key].dtype == np.float64 for key in weights)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.safetensors", "b.safetensors"]  # no temp files


def test_a_failed_save_leaves_the_old_file_untouched(tmp_path):
    config = get_preset("lstm")
    path = tmp_path / "model.safetensors"
    save_weights(path, initial_weights(config), config)
    before = path.read_bytes()
    broken = initial_weights(config)
    broken["out.bias"] = np.full(10, np.nan, np.float32)
    with pytest.raises(SeqMnistError, match="out.bias holds NaN"):
        save_weights(path, broken, config)
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def write_file(path, weights, config=None):
    metadata = None if config is None else {"config": config.to_json()}
    path.write_bytes(save(weights, metadata))
    return path


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda w: w.pop("rnn.bias_hh_l0"), "missing tensor rnn.bias_hh_l0"),
        (
            lambda w: w.update({"rnn.weight_ih_l1": np.zeros((256, 64), np.float32)}),
            "unexpected tensor rnn.weight_ih_l1",
        ),
        (
            lambda w: w.update({"out.weight": np.zeros((10, 32), np.float32)}),
            "out.weight has shape (10, 32), expected (10, 64)",
        ),
        (lambda w: w.update({"out.bias": np.zeros(10, np.int32)}), "out.bias has dtype int32, expected float32"),
        (lambda w: w.update({"out.bias": np.full(10, np.inf, np.float32)}), "out.bias holds NaN or inf"),
    ],
)
def test_bad_tensors_are_named(tmp_path, edit, fragment):
    config = get_preset("lstm")
    weights = initial_weights(config)
    edit(weights)
    path = write_file(tmp_path / "w.safetensors", weights, config)
    with pytest.raises(SeqMnistError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_weights(path)


def test_a_config_that_disagrees_with_the_flags_is_refused(tmp_path):
    config = get_preset("lstm")
    path = write_file(tmp_path / "w.safetensors", initial_weights(config), config)
    with pytest.raises(SeqMnistError, match="holds hidden_size=64 but the flags ask for 128"):
        load_weights(path, dataclasses.replace(config, hidden_size=128))


def test_a_file_without_config_needs_a_preset(tmp_path):
    config = get_preset("lstm")
    path = write_file(tmp_path / "w.safetensors", initial_weights(config))
    with pytest.raises(SeqMnistError, match="no config in its metadata"):
        load_weights(path)
    assert load_weights(path, config)[1] == config


@pytest.mark.parametrize("payload", [b"", b"not safetensors at all", b"\xff" * 8 + b"{}"])
def test_non_safetensors_files_are_refused_in_one_line(tmp_path, payload):
    path = tmp_path / "w.safetensors"
    path.write_bytes(payload)
    with pytest.raises(SeqMnistError, match="not a safetensors weights file") as error:
        load_weights(path)
    assert "\n" not in str(error.value)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(data=st.data())
def test_weights_loader_fuzz_returns_weights_or_our_error(tmp_path, data):
    config = get_preset("lstm")
    payload = bytearray(save(initial_weights(config), {"config": config.to_json()}))
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(payload) - 1))
        payload[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(payload)))
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(bytes(payload[:cut]))
    try:
        weights, loaded = load_weights(path)
    except SeqMnistError as error:
        assert "\n" not in str(error)
    else:
        assert set(weights) == set(canonical_shapes(loaded))
