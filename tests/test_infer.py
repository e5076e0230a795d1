"""infer_port: the whole table proposed from the two models, ambiguities decided by running them in float64.

It must reproduce the hand-written table of every example and preset; pair two same-shape layers by what
they compute when their names say otherwise; find the flattened-NCHW Linear and a transposed square
tensor; say what it could not pair in one line each and return the rest; refuse two models with nothing
in common in one line.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from flax import nnx
from torch import nn

from common.presets import PRESETS
from examples.cnn import port as cnn
from examples.lstm import port as lstm
from examples.resnet import port as resnet
from examples.transformer import port as transformer
from parity import PortError, check_port, infer_port, transpose
from parity.port.declare import parse_entry
from parity.preset_ports import preset_port
from tests.test_stock_ports import TorchGRU

RNG = np.random.default_rng(0)
ROWS = RNG.random((8, 28, 28), dtype=np.float32)
IMAGES = RNG.random((8, 1, 28, 28), dtype=np.float32)


def same_table(inferred, port) -> None:
    assert set(map(parse_entry, inferred.port.weights)) == set(port.entries), inferred.code()
    assert len(inferred.port.weights) == len(port.weights)


EXAMPLES = {
    "cnn": (cnn.make_port, IMAGES),
    "transformer": (transformer.make_port, ROWS),
    "lstm": (lstm.make_port, ROWS),
    "resnet": (resnet.make_port, IMAGES),
}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_infer_port_reproduces_each_examples_hand_written_table(name):
    make, inputs = EXAMPLES[name]
    port = make()
    inferred = infer_port(port.torch_model, port.flax_model, inputs, name=name)
    same_table(inferred, port)
    assert inferred.decided, inferred.undecided
    assert list(inferred.port.inputs) == list(port.inputs)
    assert list(inferred.port.not_ported) == list(port.not_ported)
    hand = {row[0] for row in port.submodules}
    assert hand - {"block2.shortcut"} <= {row[0] for row in inferred.port.submodules}


# lstm2x128 is lstm2's shape at hidden 128: the default tier infers each shape once, --run-slow adds it
@pytest.mark.parametrize(
    "preset", [pytest.param(p, marks=pytest.mark.slow) if p == "lstm2x128" else p for p in PRESETS]
)
def test_infer_port_reproduces_each_presets_table(preset):
    port = preset_port(preset)
    inferred = infer_port(port.torch_model, port.flax_model, ROWS, name=preset)
    same_table(inferred, port)
    assert inferred.decided and [tuple(row[:2]) for row in inferred.port.submodules] == [
        tuple(row[:2]) for row in port.submodules
    ]


def test_the_inferred_cnn_port_passes_check_port_and_its_code_pastes():
    port = cnn.make_port()
    inferred = infer_port(port.torch_model, port.flax_model, IMAGES, name="cnn")
    report = check_port(inferred.port, IMAGES, np.arange(8) % 10, steps=2, batch_size=4)
    assert report.passed, report.table()
    namespace: dict = {}
    exec("from parity import *\n" + inferred.code(), namespace)
    assert [parse_entry(row) for row in namespace["weights"]] == inferred.port.entries
    assert namespace["inputs"] == list(inferred.port.inputs)
    fc1 = next(mark for row, mark in zip(inferred.port.weights, inferred.marks, strict=True) if row[0] == "fc1.weight")
    assert "flattened NCHW" in fc1 and "float64 agrees" in fc1
    pytest.importorskip("ruff")  # pasted into a formatted codebase, the rows stay as they are
    check = [sys.executable, "-m", "ruff", "format", "--check", "--isolated", "--stdin-filename", "port.py", "-"]
    assert subprocess.run(check, input=inferred.code() + "\n", text=True, capture_output=True).returncode == 0


# ---- ambiguities decided by running the models -------------------------------------------------------------


class TorchTwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(28, 28)
        self.second = nn.Linear(28, 28)
        self.mix = nn.Parameter(torch.randn(28, 28))  # a lone square matrix
        self.head = nn.Linear(28, 10)

    def forward(self, rows):
        x = torch.tanh(self.second(torch.tanh(self.first(rows)))) @ self.mix
        return self.head(x[:, -1])


class FlaxTwoLayers(nnx.Module):
    """The same model, but its names say the opposite of its order, and it keeps `mix` transposed."""

    def __init__(self, rngs: nnx.Rngs):
        self.first = nnx.Linear(28, 28, rngs=rngs)  # runs second
        self.second = nnx.Linear(28, 28, rngs=rngs)  # runs first
        self.mix = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (28, 28)))
        self.head = nnx.Linear(28, 10, rngs=rngs)

    def __call__(self, rows):
        x = nnx.tanh(self.first(nnx.tanh(self.second(rows)))) @ self.mix.T
        return self.head(x[:, -1])


def test_same_shape_layers_are_paired_by_what_they_compute_and_a_square_tensor_by_its_orientation():
    inferred = infer_port(TorchTwoLayers, lambda: FlaxTwoLayers(nnx.Rngs(0)), ROWS)
    table = {parse_entry(row).torch[0]: parse_entry(row) for row in inferred.port.weights}
    assert table["first.weight"].flax == ("second.kernel",) and table["second.weight"].flax == ("first.kernel",)
    assert table["mix"].steps == (transpose(),)
    assert inferred.decided, inferred.undecided
    marks = dict(zip((row[0] for row in inferred.port.weights), inferred.marks, strict=True))
    assert marks["first.weight"].startswith("paired in float64") and "transposed" in marks["mix"]
    assert check_port(inferred.port, ROWS, np.arange(8) % 10, checks=("outputs", "gradients")).passed


class TorchExtra(TorchTwoLayers):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(28)  # the Flax model has no norm: unpaired


def test_what_cannot_be_paired_is_said_in_one_line_and_the_rest_is_returned():
    inferred = infer_port(TorchExtra(), FlaxTwoLayers(nnx.Rngs(0)), ROWS)
    assert [line for line in inferred.undecided if line.startswith("torch norm (LayerNorm)")], inferred.undecided
    assert {"norm.weight", "norm.bias"} <= set(inferred.port.not_ported)
    assert len(inferred.port.weights) == 7 and "# UNDECIDED: torch norm (LayerNorm)" in inferred.code()


def test_two_models_with_nothing_in_common_are_refused_in_one_line_naming_the_first_module():
    flax_transformer = transformer.make_port().flax_model
    with pytest.raises(PortError, match=r"nothing in common: torch conv1 \(Conv2d\)") as error:
        infer_port(cnn.make_port().torch_model, flax_transformer, IMAGES)
    assert "\n" not in str(error.value)


def test_a_batchnorm_momentum_that_disagrees_is_stated():
    port = resnet.make_port(flax_options={"momentum": 0.99})
    inferred = infer_port(port.torch_model, port.flax_model, IMAGES)
    assert any("torch momentum 0.1 is Flax momentum 0.9, but bn has 0.99" in note for note in inferred.notes)
    same_table(inferred, resnet.make_port())


class TorchFormGRUCell(nnx.GRUCell):
    """nnx.GRUCell with a bias on its hidden projection: b_hn inside r * (W_hn h + b_hn), as nn.GRU keeps it."""

    def __init__(self, features: int, hidden: int, *, rngs: nnx.Rngs, **dtypes):
        super().__init__(features, hidden, rngs=rngs, **dtypes)
        self.dense_h = nnx.Linear(hidden, 3 * hidden, rngs=rngs, **dtypes)


class FlaxGRU(nnx.Module):
    def __init__(self, dtype: str = "float32", cell: type = nnx.GRUCell):
        rngs = nnx.Rngs(0)
        self.rnn = nnx.RNN(cell(28, 16, rngs=rngs, param_dtype=dtype, dtype=dtype))
        self.head = nnx.Linear(16, 10, rngs=rngs, param_dtype=dtype, dtype=dtype)

    def __call__(self, rows):
        return self.head(self.rnn(rows)[:, -1])


def test_a_gru_onto_a_one_bias_cell_is_refused_in_one_line_and_in_pytorchs_form_inferred_and_proved():
    with pytest.raises(
        PortError, match=r"torch gru.l0 \(gru\) onto flax rnn.cell \(GRUCell\): weights: gru.bias_hh_l0: nn.GRU keeps"
    ) as err:
        infer_port(TorchGRU, FlaxGRU, ROWS)
    assert "\n" not in str(err.value) and "gru.bias_hh_l0" in str(err.value)

    def torch_form(dtype: str = "float32") -> FlaxGRU:
        return FlaxGRU(dtype, TorchFormGRUCell)

    inferred = infer_port(TorchGRU, torch_form, ROWS, name="gru")
    assert ("gru.bias_hh_l0", "rnn.cell.dense_h.bias") in inferred.port.weights and inferred.decided
    report = check_port(inferred.port, ROWS, np.arange(8), steps=2, batch_size=4)
    assert report.passed, report.table()
