"""Unit-local checks (issue 35): each declared submodule fed torch's own inputs to it, so that one run names
every faulty unit, and a fault between the units is said to lie there."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx
from torch import nn

from examples.mnist import mnist_test_inputs
from examples.resnet import port as resnet
from parity import Port, check_port, infer_port, permute, transpose

UNITS = ("units",)


@pytest.fixture(scope="module")
def images():
    return mnist_test_inputs(8, channel_axis=True)


def verdicts(report, dtype="float64") -> dict[str, bool | None]:
    return {
        row.case.split(" (flax")[0]: row.passed
        for row in report.rows
        if row.check == "units" and row.dtype == dtype and " (flax" in row.case
    }


def test_a_correct_port_passes_every_unit(images):
    report = check_port(resnet.make_port(), *images, checks=UNITS)
    assert report.passed, report.table()
    assert set(verdicts(report)) == {row[0] for row in resnet.submodules()}


def test_three_bugs_in_three_units_are_named_in_one_report_and_every_other_unit_passes(images):
    """'SAME' padding on block2's strided convolution, the first BatchNorm's statistics swapped, block1's second
    kernel with its window transposed: the chained submodules check fails everything from `bn` on; each unit,
    fed torch's own inputs, fails only where its own bug is."""
    table = resnet.weights()
    table = [
        ("bn.running_mean", "bn.var")
        if row[0] == "bn.running_mean"
        else ("bn.running_var", "bn.mean")
        if row[0] == "bn.running_var"
        else ("block1.conv2.weight", "block1.conv2.kernel", permute(3, 2, 1, 0))
        if row[0] == "block1.conv2.weight"
        else row
        for row in table
    ]
    report = check_port(resnet.make_port(table, {"strided_padding": "SAME"}), *images, checks=("submodules", *UNITS))
    faulty = {"bn", "block1.conv2", "block2.conv1"}
    for dtype in ("float32", "float64"):
        found = verdicts(report, dtype)
        assert {name for name, passed in found.items() if passed is False} == faulty, report.table()
        assert all(found[name] for name in found if name not in faulty)
    assert "faulty units (each on torch's own inputs): bn, block1.conv2, block2.conv1" in report.table()
    chained = [row.case.split(" (flax")[0] for row in report.rows if row.check == "submodules" and not row.passed]
    assert len(chained) > 2 * len(faulty)  # the chained check fails past the first bug: it cannot say which


class TorchBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 8)

    def forward(self, x):
        return self.fc2(self.fc1(x).relu())


class TorchNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.block, self.head = TorchBlock(), nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.block(x))


class FlaxBlock(nnx.Module):
    def __init__(self, relu: bool):
        self.fc1, self.fc2, self.relu = nnx.Linear(6, 8, rngs=nnx.Rngs(0)), nnx.Linear(8, 8, rngs=nnx.Rngs(1)), relu

    def __call__(self, x):
        hidden = self.fc1(x)
        return self.fc2(jax.nn.relu(hidden) if self.relu else hidden)


class FlaxNet(nnx.Module):
    def __init__(self, relu: bool = True):
        self.block, self.head = FlaxBlock(relu), nnx.Linear(8, 3, rngs=nnx.Rngs(2))

    def __call__(self, x):
        return self.head(self.block(x))


TABLE = [
    (
        f"{name}.{kind}",
        f"{name}.{'kernel' if kind == 'weight' else 'bias'}",
        *([transpose()] if kind == "weight" else []),
    )
    for name in ("block.fc1", "block.fc2", "head")
    for kind in ("weight", "bias")
]
SUBMODULES = [("block.fc1", "block.fc1"), ("block.fc2", "block.fc2"), ("head", "head")]


def test_a_fault_in_a_parents_own_code_is_put_before_the_unit_it_feeds_and_one_after_every_unit_between_them():
    """Flax's block forgets its ReLU: fc2 fails in its place, passes alone on torch's inputs to it, and the row
    puts the fault in block's own code. A model that scales its logits after the head: every unit passes, the
    outputs do not, and a row puts the fault between the units, in the model's own forward."""
    x = np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)
    labels = np.arange(8) % 3
    report = check_port(Port("net", TorchNet, lambda: FlaxNet(relu=False), TABLE, SUBMODULES), x, labels)
    assert verdicts(report) == {"block.fc1": True, "block.fc2": False, "head": True}
    fc2 = next(row for row in report.rows if row.check == "units" and row.dtype == "float64" and not row.passed)
    assert fc2.detail.endswith(
        "alone on torch's inputs to it, it passes: the fault lies before it, in block's own code"
    )

    class Scaled(FlaxNet):
        def __call__(self, x):
            return 1.01 * super().__call__(x)

    report = check_port(Port("net", TorchNet, Scaled, TABLE, SUBMODULES), x, labels)
    assert all(verdicts(report).values())
    between = [row for row in report.rows if row.case == "between the units"]
    assert [row.dtype for row in between] == ["float32", "float64"]
    assert between[1].detail == (
        "every unit passes on torch's inputs, but the model's output differs: the fault lies between the units, "
        "in the model's own forward"
    )
    assert check_port(Port("net", TorchNet, FlaxNet, TABLE, SUBMODULES), x, labels).passed


class TorchStack(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.norm_a, self.b = nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 8)
        self.norm_b, self.c, self.head = nn.LayerNorm(8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        x = self.norm_a(self.a(x)).tanh()
        return self.head(self.c(self.norm_b(self.b(x)).tanh()))


class FlaxStack(nnx.Module):
    """The same computation under names that mislead (its `c` runs first, its `norm_b` first of the norms), with a
    bug in the norm that runs first: epsilon 0.1 for torch's 1e-5."""

    def __init__(self):
        rngs = nnx.Rngs(0)
        self.c, self.norm_b = nnx.Linear(8, 8, rngs=rngs), nnx.LayerNorm(8, epsilon=0.1, rngs=rngs)
        self.b, self.norm_a = nnx.Linear(8, 8, rngs=rngs), nnx.LayerNorm(8, epsilon=1e-5, rngs=rngs)
        self.a, self.head = nnx.Linear(8, 8, rngs=rngs), nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.tanh(self.norm_b(self.c(x)))
        return self.head(self.a(jax.nn.tanh(self.norm_a(self.b(x)))))


def test_infer_port_past_a_faulty_unit_pairs_every_other_unit_right():
    """Judged chained, every unit after the faulty norm sees spoiled inputs and keeps the names' (wrong) guess;
    judged unit by unit, each is decided on torch's own inputs to it, and the faulty one alone is said."""
    x = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    inferred = infer_port(TorchStack, FlaxStack, x)
    paired = {row[0].rsplit(".", 1)[0]: row[1].rsplit(".", 1)[0] for row in inferred.port.weights}
    assert paired == {"a": "c", "norm_a": "norm_b", "b": "b", "norm_b": "norm_a", "c": "a", "head": "head"}
    assert len(inferred.undecided) == 1 and inferred.undecided[0].startswith("norm_a (flax norm_b): differs on torch's")


def test_infer_port_on_the_resnet_with_one_wrong_batchnorm_epsilon_keeps_every_other_units_table(images):
    from examples.resnet import flax_model, torch_model

    def faulty(dtype="float32"):
        model = flax_model.ResNet(nnx.Rngs(0), resnet.CHANNELS, param_dtype=dtype)
        model.block1.bn1.epsilon = 1e-2  # PyTorch's is 1e-5
        return model

    inferred = infer_port(lambda: torch_model.ResNet(resnet.CHANNELS), faulty, images[0])
    assert {tuple(map(str, row)) for row in inferred.port.weights} == {tuple(map(str, row)) for row in resnet.weights()}
    assert len(inferred.undecided) == 1, inferred.undecided
    assert inferred.undecided[0].startswith("block1.bn1 (flax block1.bn1): differs on torch's own inputs")
