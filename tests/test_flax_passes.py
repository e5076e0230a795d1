"""The Flax side's passes and builds: each forward pass of a check one compiled program (`parity.port.flax_passes`),
recording and splicing what an eager pass would, an eager pass for a model that cannot be traced; and a model
built again from the kept structure (`building.built_to_fill`) holding its own variables and buffers."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from flax import nnx
from torch import nn

from examples.lstm import port as lstm
from examples.mnist import mnist_test_inputs
from parity import Port, check_port, transpose
from parity.port import flax_passes, flax_runner
from parity.port.building import built_to_fill
from parity.port.declare import Port as PortClass
from parity.port.table import declared
from parity.port.weights import as_dtype, torch_start

FORWARD = ("outputs", "submodules", "units")


@pytest.fixture
def eager_calls(monkeypatch):
    """The ports whose Flax model ran op by op (`Port.run_flax`, which a compiled pass never calls)."""
    calls: list[str] = []
    original = PortClass.run_flax

    def run_flax(self, model, *inputs):
        calls.append(self.name)
        return original(self, model, *inputs)

    monkeypatch.setattr(PortClass, "run_flax", run_flax)
    return calls


@flax_runner.in_x64
def test_a_compiled_pass_gives_an_eager_passs_outputs_records_and_splices(eager_calls):
    port = lstm.make_port()
    rows, _ = mnist_test_inputs(8, channel_axis=False)
    start = torch_start(port, 0, lambda model: None)
    table = declared(port, start, "eval", "cpu")
    model = flax_runner.flax_model_holding(port, table.entries, as_dtype(start.weights, "float64"), "float64")
    inputs = (rows.astype(np.float64),)
    given = {"head": [np.full((8, 10), 3.0)], f"layers.{lstm.LAYERS - 1}": []}  # the head's output replaced
    passes = {}
    for compiled in (True, False):
        outputs, recorded = flax_passes.flax_pass(port, model, inputs, record=True, compiled=compiled)
        spliced = flax_passes.flax_pass(port, model, inputs, replacing=given, compiled=compiled)
        passes[compiled] = outputs, recorded, spliced
        assert eager_calls == ([] if compiled else ["lstm", "lstm"])
    (outputs, recorded, spliced), (eager_outputs, eager_recorded, eager_spliced) = passes[True], passes[False]
    assert [name for name, _ in outputs] == [name for name, _ in eager_outputs] == ["output"]
    np.testing.assert_allclose(outputs[0][1], eager_outputs[0][1], rtol=1e-12, atol=1e-12)
    assert sorted(recorded) == sorted(eager_recorded) == ["head", f"layers.{lstm.LAYERS - 1}"]
    for path in recorded:
        assert len(recorded[path]) == len(eager_recorded[path]) == 1
        np.testing.assert_allclose(recorded[path][0], eager_recorded[path][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(recorded["head"][0], outputs[0][1])  # the head's output is the model's
    # spliced: the head records its own output and hands on torch's (so the model's output is the given one)
    np.testing.assert_allclose(spliced[1]["head"][0], recorded["head"][0], rtol=1e-12, atol=1e-12)
    for handed_on in (spliced, eager_spliced):
        np.testing.assert_array_equal(handed_on[0][0][1], given["head"][0])


class Gated(nn.Module):  # a forward pass that reads a value: Python control flow no trace can follow
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(3, 2)

    def forward(self, x):
        h = self.a(x)
        return self.b(torch.relu(h) if float(h.detach().sum()) > -1e9 else h)


class FlaxGated(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.a, self.b = nnx.Linear(4, 3, rngs=rngs), nnx.Linear(3, 2, rngs=rngs)

    def __call__(self, x):
        h = self.a(x)
        return self.b(nnx.relu(h) if float(h.sum()) > -1e9 else h)


def test_a_model_that_cannot_be_traced_runs_eagerly_and_passes(eager_calls):
    weights = [(f"{m}.weight", f"{m}.kernel", transpose()) for m in "ab"] + [(f"{m}.bias", f"{m}.bias") for m in "ab"]
    port = Port("gated", Gated, lambda: FlaxGated(nnx.Rngs(0)), weights, submodules=[("a", "a"), ("b", "b")])
    inputs = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    report = check_port(port, inputs, None, checks=FORWARD)
    assert report.passed, report.table()
    assert {row.check for row in report.rows} >= set(FORWARD)
    assert eager_calls == ["gated"] * 4  # outputs with submodules, then units, in each dtype


def test_a_model_built_again_holds_its_own_variables_and_buffers():
    factory = lstm.make_port().flax_model
    filled = {path for entry in lstm.make_port().entries for path in entry.flax} - {"head.bias"}  # the bias left
    first, second = (built_to_fill(factory, "float32", filled) for _ in range(2))
    assert first is not second and first.head.kernel is not second.head.kernel
    first.head.kernel.set_value(jax.numpy.ones(first.head.kernel.shape))
    assert isinstance(second.head.kernel.get_value(), jax.ShapeDtypeStruct)  # filled by its caller, not by first's
    np.testing.assert_array_equal(first.head.bias.get_value(), second.head.bias.get_value())  # the initial value
    first.head.bias.get_value().delete()  # as a trajectory step's donation deletes it
    third = built_to_fill(factory, "float32", filled)
    np.testing.assert_array_equal(np.asarray(third.head.bias.get_value()), np.asarray(second.head.bias.get_value()))


ACTIVATION = {"flax": nnx.relu}  # what FlaxActivated applies, read at each call


class Activated(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class FlaxActivated(nnx.Module):
    def __init__(self, rngs: nnx.Rngs | None = None):
        rngs = rngs or nnx.Rngs(0)
        self.a, self.b = nnx.Linear(4, 3, rngs=rngs), nnx.Linear(3, 2, rngs=rngs)

    def __call__(self, x):
        return self.b(ACTIVATION["flax"](self.a(x)))


def test_each_check_proves_the_code_as_it_is_then_not_a_program_kept_from_an_earlier_check(monkeypatch):
    weights = [(f"{m}.weight", f"{m}.kernel", transpose()) for m in "ab"] + [(f"{m}.bias", f"{m}.bias") for m in "ab"]
    port = Port("activated", Activated, FlaxActivated, weights, submodules=[("a", "a"), ("b", "b")])
    inputs = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    labels = np.arange(6) % 2
    checks = ("outputs", "submodules", "gradients", "trajectory")
    assert check_port(port, inputs, labels, checks=checks, steps=2).passed
    monkeypatch.setitem(ACTIVATION, "flax", nnx.gelu)  # the same port, its Flax code changed since
    failed = {row.check for row in check_port(port, inputs, labels, checks=checks, steps=2).failures()}
    assert failed == {"outputs", "submodules", "gradients", "trajectory"}
