"""Streaming checks (issue 35): both models held in float32, the float64 run computing on each weight's float64
copy as it is used, with the same verdicts as a whole float64 model's; and a check too large for the free
memory stops in one line before it builds a model."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from examples.lstm import port as lstm
from examples.mnist import mnist_test_inputs
from examples.transformer import port as transformer
from examples.transformer import torch_model
from parity import PORT_CHECKS, STREAMING_CHECKS, PortError, check_port
from parity.port import flax_runner, memory, torch_runner, transforms
from parity.port.torch_runner import widened
from parity.port.weights import flax_variables, load_flax_entries, load_torch

FORWARD = ("outputs", "units")


@pytest.fixture(scope="module")
def rows():
    return mnist_test_inputs(8, channel_axis=False)


def first(output):
    return output[0] if isinstance(output, tuple) else output


MODELS = {
    "lstm": (lambda: nn.LSTM(28, 16, num_layers=2, bidirectional=True, batch_first=True), (3, 28, 28)),
    "transformer": (
        lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True), 2),
        (3, 28, 32),
    ),
    "conv-batchnorm": (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()), (3, 1, 28, 28)),
}


@pytest.mark.parametrize("name", MODELS)
def test_a_float32_model_widened_computes_what_its_float64_copy_does(name):
    """`nn.LSTM` reads its weights' dtype; MultiheadAttention reads `out_proj.weight` without calling it;
    BatchNorm reads its running statistics: each gets float64 copies, and the model keeps its float32."""
    build, shape = MODELS[name]
    torch.manual_seed(0)
    model = build().eval()
    model[1].running_var.uniform_(0.5, 2.0) if name == "conv-batchnorm" else None
    double = copy.deepcopy(model).double()
    x = torch.rand(*shape, dtype=torch.float64)
    with torch.no_grad():
        expected = first(double(x))
        with widened(model):
            got = first(model(x))
        with pytest.raises((RuntimeError, ValueError)):  # outside the context, a float32 model again
            model(x)
    assert got.dtype == torch.float64
    assert {p.dtype for p in model.state_dict().values() if p.is_floating_point()} == {torch.float32}
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=0, atol=1e-14)


@pytest.mark.parametrize("example", [transformer, lstm], ids=["transformer", "lstm"])
def test_streaming_gives_the_whole_models_rows(example, rows, monkeypatch):
    """The same rows, float32's figures identical and float64's to rounding, with no model loaded in float64
    but a summed bias (the LSTM's b_ih + b_hh: its float32 sum would be off by float32's rounding)."""
    whole = check_port(example.make_port(), *rows, checks=FORWARD)
    torch_dtypes, flax_wide = set(), set()

    def torch_load(model, weights, dtype):
        torch_dtypes.add(dtype)
        return load_torch(model, weights, dtype)

    def flax_load(model, entries, weights, narrow=False):
        model = load_flax_entries(model, entries, weights, narrow)
        flax_wide.update(p for p, v in flax_variables(model).items() if v.get_value().dtype == np.float64)
        return model

    monkeypatch.setattr(torch_runner, "load_torch", torch_load)
    monkeypatch.setattr(flax_runner, "load_flax_entries", flax_load)
    streamed = check_port(example.make_port(), *rows, checks=FORWARD, streaming=True)
    summed = {path for entry in example.make_port().entries if transforms.one_way(entry.steps) for path in entry.flax}
    assert torch_dtypes == {"float32"}
    assert flax_wide == summed and (example is transformer) == (not summed)
    assert whole.passed and streamed.passed, streamed.table()
    assert [(r.check, r.case, r.dtype) for r in whole.rows] == [(r.check, r.case, r.dtype) for r in streamed.rows]
    for one, other in zip(whole.rows, streamed.rows, strict=True):
        gap, streamed_gap = one.figures.get("max abs"), other.figures.get("max abs")
        if one.dtype == "float32" or gap is None:
            assert gap == streamed_gap, (one, other)
        else:  # float64: the same math on the same values, to float64's rounding
            assert abs(gap - streamed_gap) < 1e-14, (one, other)
    assert "streaming: weights held in float32" in streamed.table()


def test_streaming_names_every_faulty_unit_in_float64(rows):
    """LayerNorm's epsilon 1e-6 in Flax against torch's 1e-5: every norm fails on its own, the rest pass."""
    port = transformer.make_port(flax_options={"epsilon": 1e-6})
    report = check_port(port, *rows, checks=FORWARD, streaming=True)
    failing = {r.case.split(" (flax")[0] for r in report.rows if r.check == "units" and r.passed is False}
    passing = {r.case.split(" (flax")[0] for r in report.rows if r.check == "units" and r.passed}
    norms = {f"encoder.layers.{layer}.norm{n}" for layer in range(2) for n in (1, 2)}
    assert failing == norms, report.table()
    assert {"embed", "head", "encoder.layers.0.self_attn", "encoder.layers.1.linear2"} <= passing
    assert not report.passed


@pytest.mark.parametrize(
    "options, words",
    [
        ({"checks": ("outputs", "gradients")}, "gradients need"),
        ({"checks": ("trajectory",)}, "trajectory need"),
        ({"coverage": True}, "coverage need"),
        ({"mode": "train"}, "mode='train' updates batch statistics in place"),
    ],
)
def test_streaming_refuses_what_needs_the_whole_model_in_one_line(rows, options, words):
    with pytest.raises(PortError, match=f"^streaming=True: {words}") as raised:
        check_port(transformer.make_port(), *rows, streaming=True, **options)
    assert "\n" not in str(raised.value)


def test_a_check_too_large_for_the_free_memory_stops_before_it_builds_a_model(rows, monkeypatch):
    built = []

    def factory():
        built.append(torch.empty(0).device.type)
        return torch_model.TransformerClassifier(32, 4, 64, 2)

    port = dataclasses.replace(transformer.make_port(), torch_model=factory)
    count = sum(t.numel() for t in torch_model.TransformerClassifier(32, 4, 64, 2).state_dict().values())
    assert memory.weight_count(port) == count
    built.clear()
    held = memory.resident()
    assert held > 0  # the interpreter, torch and JAX: part of the peak already
    monkeypatch.setattr(memory, "available", lambda: memory.need(count, PORT_CHECKS, streaming=False) - held - 1)
    monkeypatch.setattr(memory, "resident", lambda: held)
    with pytest.raises(PortError, match=rf"{count:,} weights need about .* holds .* is free; pass streaming=True"):
        check_port(port, *rows)
    assert built == ["meta"]  # counted on the meta device, nothing built for real
    report = check_port(port, *rows, streaming=True)  # the same free memory holds the streaming check
    assert report.passed, report.table()
    assert {row.check for row in report.rows} == set(STREAMING_CHECKS)


def test_a_model_that_cannot_be_built_on_the_meta_device_is_checked_without_an_estimate(rows, monkeypatch):
    def factory():
        model = torch_model.TransformerClassifier(32, 4, 64, 2)
        model.head.weight.detach().numpy()  # a meta tensor has no data
        return model

    port = dataclasses.replace(transformer.make_port(), torch_model=factory)
    assert memory.weight_count(port) is None
    monkeypatch.setattr(memory, "available", lambda: 0)
    assert check_port(port, *rows, checks=("outputs",)).passed


def test_the_examples_take_streaming_and_refuse_what_it_cannot_check(capsys):
    assert transformer.main(["--images", "4", "--streaming", "--checks", "outputs"]) == 0
    assert "streaming: weights held in float32" in capsys.readouterr().out
    with pytest.raises(SystemExit) as raised:
        transformer.main(["--images", "4", "--streaming", "--checks", "outputs,gradients"])
    assert raised.value.code == 2
    assert "--streaming: leave out gradients: a check that needs the whole model in float64" in capsys.readouterr().err
