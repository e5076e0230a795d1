"""The PyTorch model: shapes, last-step head, bidirectional semantics, canonical names, tutorial checkpoints."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch

from common.errors import SeqMnistError
from common.presets import PRESETS, get_preset
from common.weights import canonical_shapes
from parity import oracle
from parity.compare import ABSOLUTE_FLOAT64, output_tolerance
from parity.suite_checks import random_weights
from tests.conftest import assert_one_line_error, run_cli, run_module
from torch_impl.convert import (
    from_canonical,
    read_tutorial_checkpoint,
    read_weights,
    to_canonical,
    tutorial_to_canonical,
)
from torch_impl.model import build_model


@pytest.mark.parametrize("name", PRESETS)
def test_state_dict_is_the_canonical_format_and_logits_have_the_right_shape(name, mnist_rows):
    config = get_preset(name)
    model = build_model(config)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == canonical_shapes(config)
    assert list(model.state_dict()) == list(canonical_shapes(config))
    assert model(torch.from_numpy(mnist_rows)).shape == (32, 10)


def test_head_reads_the_last_time_step_only(mnist_rows):
    model = build_model(get_preset("lstm2"))
    rows = torch.from_numpy(mnist_rows)
    changed_last = rows.clone()
    changed_last[:, -1] += 0.5
    output, _ = model.rnn(rows)
    torch.testing.assert_close(model(rows), model.out(output[:, -1, :]), rtol=0, atol=0)
    assert not torch.allclose(model(rows), model(changed_last))


def test_bidirectional_output_halves_are_the_final_states(mnist_rows):
    config = get_preset("bilstm2x128")
    model = build_model(config)
    output, (h_n, _) = model.rnn(torch.from_numpy(mnist_rows))
    hidden = config.hidden_size
    # h_n is [layers * directions, batch, hidden]: the last layer's forward state is -2, its backward state -1
    torch.testing.assert_close(output[:, -1, :hidden], h_n[-2], rtol=0, atol=0)
    torch.testing.assert_close(output[:, 0, hidden:], h_n[-1], rtol=0, atol=0)


def test_the_heads_backward_half_has_read_only_the_last_row(mnist_rows):
    model = build_model(get_preset("bilstm"))
    output = model.rnn(torch.from_numpy(mnist_rows))[0]
    last_row_only = model.rnn(torch.from_numpy(mnist_rows[:, -1:]))[0]
    torch.testing.assert_close(output[:, -1, 64:], last_row_only[:, 0, 64:], rtol=1e-6, atol=1e-6)
    assert not torch.allclose(output[:, -1, :64], last_row_only[:, 0, :64], atol=1e-3)


def test_identity_init_with_torchs_own_initialisers():
    model = build_model(get_preset("rnn"), native_seed=0)
    for layer in range(3):
        torch.testing.assert_close(getattr(model.rnn, f"weight_hh_l{layer}"), torch.eye(150), rtol=0, atol=0)


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_canonical_weights_reproduce_the_numpy_oracle(name, dtype, mnist_rows):
    config = dataclasses.replace(get_preset(name), dtype=dtype)
    weights = random_weights(config)
    model = from_canonical(weights, config)
    logits = model(torch.from_numpy(mnist_rows.astype(dtype))).detach().numpy()
    expected = oracle.logits(config, weights, mnist_rows)
    tolerance, _ = output_tolerance(dtype, max(1.0, np.abs(expected).max()))
    assert np.abs(logits - expected).max() <= tolerance
    assert all(np.array_equal(a, weights[k]) for k, a in to_canonical(model).items())


def test_gru_matches_the_oracle(mnist_rows):
    config = dataclasses.replace(get_preset("bilstm"), cell="gru", num_layers=2, dtype="float64")
    weights = random_weights(config)
    logits = from_canonical(weights, config)(torch.from_numpy(mnist_rows.astype("float64"))).detach().numpy()
    assert np.abs(logits - oracle.logits(config, weights, mnist_rows)).max() <= ABSOLUTE_FLOAT64


class TutorialRNN(torch.nn.Module):
    """The classic tutorials' modules, with their own attribute names."""

    def __init__(self, recurrent_name: str, head_name: str, config, batch_first=True):
        super().__init__()
        kind = {"lstm": torch.nn.LSTM, "rnn": torch.nn.RNN}[config.cell]
        setattr(
            self,
            recurrent_name,
            kind(
                28, config.hidden_size, config.num_layers, batch_first=batch_first, bidirectional=config.bidirectional
            ),
        )
        setattr(self, head_name, torch.nn.Linear(config.num_directions * config.hidden_size, 10))


@pytest.mark.parametrize(
    "recurrent_name, head_name, preset, batch_first",
    [
        ("rnn", "out", "lstm", True),
        ("lstm", "fc", "lstm2", True),
        ("birnn", "fc", "bilstm2x128", True),
        ("basic_rnn", "FC", "rnn", False),
        ("lstm", "out", "bilstm", True),
    ],
)
def test_tutorial_checkpoints_convert_for_each_naming_variant(
    tmp_path, recurrent_name, head_name, preset, batch_first, capsys
):
    config = get_preset(preset)
    tutorial = TutorialRNN(recurrent_name, head_name, config, batch_first)
    path = tmp_path / "rnn.pkl"
    torch.save(tutorial.state_dict(), path)
    weights = tutorial_to_canonical(read_tutorial_checkpoint(path), config, str(path))
    recurrent = getattr(tutorial, recurrent_name)
    np.testing.assert_array_equal(weights["rnn.weight_hh_l0"], recurrent.weight_hh_l0.detach().numpy())
    np.testing.assert_array_equal(weights["out.bias"], getattr(tutorial, head_name).bias.detach().numpy())
    out = tmp_path / "converted.safetensors"
    result = (
        run_module("torch_impl.convert", [str(path), "--preset", preset, "--out", str(out)], capsys)
        if preset == "lstm"
        else None
    )
    if result is not None:
        assert result.returncode == 0, result.stderr
        assert read_weights(str(out), None)[1] == config


def test_a_checkpoint_for_the_wrong_architecture_is_refused(tmp_path):
    path = tmp_path / "rnn.pkl"
    torch.save(TutorialRNN("rnn", "out", get_preset("lstm")).state_dict(), path)
    with pytest.raises(SeqMnistError, match="missing tensor rnn.weight_ih_l1"):
        read_weights(str(path), get_preset("rnn"))
    torch.save(TutorialRNN("lstm", "fc", get_preset("lstm2")).state_dict(), path)
    with pytest.raises(SeqMnistError, match=r"rnn.weight_ih_l0 has shape \(256, 28\), expected \(512, 28\)"):
        read_weights(str(path), get_preset("lstm2x128"))


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_pickle_that_needs_code_is_refused_and_not_run(tmp_path):
    path = tmp_path / "evil.pkl"
    with path.open("wb") as handle:
        pickle.dump({"rnn.weight": Payload()}, handle, protocol=2)
    result = run_cli("torch_impl.evaluate", "--weights", str(path), "--preset", "lstm")
    assert_one_line_error(result, 1, "evil.pkl: refused", "weights_only")
    assert "this must never run" not in result.stdout + result.stderr
