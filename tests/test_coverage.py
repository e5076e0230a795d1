"""Coverage, proved: each example's checks catch a bug planted in every weight entry on real MNIST inputs, and
inputs that cannot tell a bug apart (all zero) leave the entry reported as not covered, with the bug named."""

from __future__ import annotations

import numpy as np
import pytest

from examples.cnn import port as cnn
from examples.lstm import port as lstm
from examples.mnist import mnist_test_inputs
from examples.resnet import port as resnet
from examples.transformer import port as transformer
from parity import check_port
from parity.port.coverage import planted_bug
from parity.port.declare import parse_entry

FORWARD = {"checks": ("outputs", "submodules"), "dtypes": ("float64",), "coverage": True}
EXAMPLES = {
    "cnn": (cnn.make_port, True, "eval"),
    "transformer": (transformer.make_port, False, "eval"),
    "lstm": (lstm.make_port, False, "eval"),
    "resnet": (resnet.make_port, True, "eval"),
    "resnet-train": (resnet.make_port, True, "train"),  # running statistics caught only by the buffers rows
}


def coverage(report):
    return [row for row in report.rows if row.check == "coverage"]


@pytest.mark.parametrize("name", list(EXAMPLES))
@pytest.mark.filterwarnings("error::FutureWarning")  # a planted initial value is cast to float64, not left float32
def test_every_example_reports_full_coverage_on_real_images(name):
    make, channel_axis, mode = EXAMPLES[name]
    port = make()
    report = check_port(port, *mnist_test_inputs(8, channel_axis), mode=mode, **FORWARD)
    (summary,) = coverage(report)
    assert summary.passed and report.passed, report.table()
    assert summary.case.startswith(f"{len(port.weights)} of {len(port.weights)} entries")


def test_inputs_that_cannot_tell_a_bug_apart_leave_the_entry_uncovered_with_the_bug_named():
    images = np.zeros((8, 1, 28, 28), np.float32)  # a transposed 5x5 window changes nothing on a blank image
    report = check_port(cnn.make_port(), images, np.arange(8) % 10, **FORWARD)
    rows = {row.case: row for row in coverage(report)[1:]}
    assert "conv1.weight -> conv1.kernel" in rows, report.table()
    assert rows["conv1.weight -> conv1.kernel"].detail.startswith("not covered: its window transposed passes")
    assert not report.passed and report.first_divergence.startswith("float64 coverage")


def test_the_bug_planted_is_the_likeliest_for_the_entrys_shape():
    rows = {parse_entry(row).torch[0]: parse_entry(row) for row in lstm.weights()}
    weights = {name: np.ones((128, 28)) for name in ("lstm.weight_ih_l0", "lstm.weight_ih_l0_reverse")}
    weights |= {name: np.ones(128) for name in ("lstm.bias_ih_l0", "lstm.bias_hh_l0")}
    kinds = {
        "lstm.weight_ih_l0": "blocks 1 and 2 of 4 swapped",
        "lstm.weight_ih_l0_reverse": "the forward direction's lstm.weight_ih_l0",
        "lstm.bias_ih_l0": "lstm.bias_hh_l0 dropped",
    }
    for name, expected in kinds.items():
        assert planted_bug(rows[name], weights, {}, {})[0] == expected
    square = parse_entry(("fc.weight", "fc.kernel"))
    assert planted_bug(square, {}, {"fc.kernel": np.ones((4, 4))}, {})[0] == "a transposed square matrix"
    bias = parse_entry(("fc.bias", "fc.bias"))
    assert planted_bug(bias, {}, {"fc.bias": np.ones(4)}, {})[0].startswith("not loaded")
