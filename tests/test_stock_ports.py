"""The ports people bring: a stock nn.LSTM onto nnx.LSTMCell (summed biases), a ResNet with BatchNorm in eval and
train mode, a model of several inputs with a dict output; each planted bug named at its own first submodule,
and each declaration that cannot fit refused in one line before anything runs."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx
from torch import nn

from examples.lstm import port as lstm
from examples.mnist import mnist_test_inputs
from examples.resnet import port as resnet
from parity import Port, PortError, add, check_port, concat, permute, split, transpose
from parity.port.transforms import apply, invert, one_way
from tests.conftest import run_module

FORWARD = ("outputs", "submodules")


@pytest.fixture(scope="module")
def rows():
    return mnist_test_inputs(16, channel_axis=False)


@pytest.fixture(scope="module")
def images():
    return mnist_test_inputs(16, channel_axis=True)


def divergence(report, check: str = "submodules") -> str:
    """The torch module the report's first divergence names (float64's, where the math differs)."""
    assert not report.passed
    prefix = f"float64 {check}: "
    assert report.first_divergence is not None and report.first_divergence.startswith(prefix), report.table()
    return report.first_divergence.removeprefix(prefix).split(" (flax")[0]


# ---- add(): the one step that combines -------------------------------------------------------------------


def test_add_sums_and_comes_back_as_the_sum_and_zeros_and_its_gradient_is_each_terms():
    a, b = np.arange(8.0), np.ones(8)
    (total,) = apply([add(), split(2)][:1], [a, b], [(8,)])
    assert np.array_equal(total, a + b)
    back = invert([add(), split(2)], [total[:4], total[4:]], [(8,), (8,)])
    assert np.array_equal(back[0], a + b) and np.array_equal(back[1], np.zeros(8))
    assert np.array_equal(apply([add()], [a, a], [(8,)], gradients=True)[0], a)
    assert one_way([add(), split(4)]) and not one_way([split(4), transpose()])


# ---- the stock LSTM ------------------------------------------------------------------------------------


@pytest.mark.trains
def test_the_stock_lstm_port_passes_every_check_in_float32_and_float64(rows):
    report = check_port(lstm.make_port(), *rows)
    assert report.passed, report.table()
    weights = {row.case: row for row in report.rows if row.check == "weights" and row.dtype == "float64"}
    assert "one-way" in weights["torch -> flax -> torch"].detail  # the summed biases, said so
    trajectory = next(row for row in report.rows if row.check == "trajectory" and row.dtype == "float64")
    assert "bias_hh_l0 at zero" in trajectory.detail or "bias_hh_l0" in trajectory.detail


def test_lstm_gate_blocks_in_flaxs_listing_order_diverge_at_the_lstm(rows):
    # nnx.state lists the cell's gates alphabetically: f, g, i, o; PyTorch stacks i, f, g, o
    report = check_port(lstm.make_port(lstm.weights(gates=("f", "g", "i", "o"))), *rows, checks=FORWARD)
    assert divergence(report) == "lstm"


def test_lstm_with_only_bias_ih_taken_diverges_at_the_lstm_and_lists_what_it_left_out(rows):
    port = lstm.make_port(lstm.weights(biases="ih"), not_ported=["lstm.bias_hh_*"])
    report = check_port(port, *rows, checks=FORWARD)
    assert divergence(report) == "lstm"
    assert sorted(report.not_ported) == sorted(
        f"lstm.bias_hh_l{layer}{suffix}" for layer in (0, 1) for suffix in ("", "_reverse")
    )
    assert "not ported (declared): lstm.bias_hh_l0, lstm.bias_hh_l0_reverse" in report.table()


def test_lstm_backward_weights_on_the_forward_cell_diverge_at_the_lstm(rows):
    report = check_port(lstm.make_port(lstm.weights(swap_directions=True)), *rows, checks=FORWARD)
    assert divergence(report) == "lstm"


def test_biases_given_as_two_tensors_without_add_are_refused_with_add_as_the_fix(rows):
    table = lstm.weights()
    summed = next(i for i, row in enumerate(table) if isinstance(row[0], tuple))
    names, paths = table[summed][0], table[summed][1]
    table[summed] = (names, paths, concat(), split(8))
    with pytest.raises(PortError, match=r"gives 8 arrays for 4 parameters; add\(\) first"):
        check_port(lstm.make_port(table), *rows, checks=("weights",))
    table[summed] = (names, paths, split(4))
    with pytest.raises(PortError, match=r"split\(4, axis=0\) takes one array, got 2; add\(\) first"):
        check_port(lstm.make_port(table), *rows, checks=("weights",))
    table[summed] = (names[0], paths, add(), split(4))
    with pytest.raises(PortError, match=r"add\(\) sums several tensors into one, got 1"):
        check_port(lstm.make_port(table), *rows, checks=("weights",))


# ---- the ResNet: BatchNorm, eval and train mode ---------------------------------------------------------------


@pytest.mark.trains
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_the_resnet_port_passes_every_check_in_float32_and_float64(images, mode):
    report = check_port(resnet.make_port(), *images, mode=mode)
    assert report.passed, report.table()
    assert len(report.not_ported) == 6 and report.mode == mode
    buffers = [row for row in report.rows if row.check == "buffers"]
    assert len(buffers) == (2 * 6 if mode == "train" else 0)  # six BatchNorms, both dtypes


def test_resnet_torch_momentum_copied_as_is_diverges_at_the_first_batchnorms_statistics_in_train_mode(images):
    port = resnet.make_port(flax_options={"momentum": 0.1})
    assert check_port(port, *images, checks=FORWARD).passed  # eval mode cannot see it
    report = check_port(port, *images, checks=FORWARD, mode="train")
    assert divergence(report, "buffers") == "bn"


def test_resnet_running_mean_and_variance_swapped_diverge_at_the_first_batchnorm(images):
    report = check_port(resnet.make_port(resnet.weights(statistics=("var", "mean"))), *images, checks=FORWARD)
    assert divergence(report) == "bn"


def test_resnet_same_padding_on_the_strided_convolution_diverges_there(images):
    report = check_port(resnet.make_port(flax_options={"strided_padding": "SAME"}), *images, checks=FORWARD)
    assert divergence(report) == "block2.conv1"


def test_stock_flax_batchnorm_agrees_in_eval_mode_and_parts_in_its_running_variance_in_train_mode(images):
    port = resnet.make_port(flax_options={"stock_batchnorm": True})
    assert check_port(port, *images, checks=FORWARD).passed
    report = check_port(port, *images, checks=FORWARD, mode="train")
    assert divergence(report, "buffers") == "bn"
    failing = [row for row in report.failures() if row.dtype == "float64"]
    assert {row.check for row in failing} == {"buffers"}  # the outputs (batch statistics) agree
    gap = failing[0].figures["max_abs_diff"]
    assert 1e-7 < gap < 1e-3  # momentum x var / (n - 1): small, and real


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        (("bn.running_mean", "bn.scale"), "torch buffer 'bn.running_mean' is mapped to Flax 'bn.scale', an nnx.Param"),
        (("bn.weight", "bn.mean"), "torch parameter 'bn.weight' is mapped to Flax 'bn.mean', an nnx.BatchStat"),
    ],
)
def test_a_buffer_and_a_parameter_each_go_to_their_own_kind_of_variable(images, row, fragment):
    table = [r for r in resnet.weights() if r[0] not in ("bn.running_mean", "bn.weight")]
    table += [row, ("bn.weight", "bn.scale") if row[0] != "bn.weight" else ("bn.running_mean", "bn.scale")]
    with pytest.raises(PortError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        check_port(resnet.make_port(table), *images, checks=("weights",))


def test_unmapped_buffers_are_still_an_error_and_a_not_ported_pattern_must_match(images):
    port = resnet.make_port()
    bare = Port(port.name, port.torch_model, port.flax_model, port.weights, inputs=port.inputs)
    with pytest.raises(PortError, match=r"leaves out: bn.num_batches_tracked.*not_ported"):
        check_port(bare, *images, checks=("weights",))
    typo = Port(
        port.name, port.torch_model, port.flax_model, port.weights, inputs=port.inputs, not_ported=["*.tracked"]
    )
    with pytest.raises(PortError, match=r"not_ported: '\*.tracked' matches no torch tensor or Flax variable"):
        check_port(typo, *images, checks=("weights",))


class DropoutNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(28, 10)
        self.drop = nn.Dropout(0.1)

    def forward(self, x):
        return self.drop(self.fc(x[:, -1]))


class FlaxDropoutNet(nnx.Module):
    def __init__(self):
        self.fc = nnx.Linear(28, 10, rngs=nnx.Rngs(0))

    def __call__(self, x):
        return self.fc(x[:, -1])


def test_train_mode_with_dropout_on_is_refused_before_anything_runs(rows):
    port = Port(
        "dropout", DropoutNet, FlaxDropoutNet, [("fc.weight", "fc.kernel", transpose()), ("fc.bias", "fc.bias")]
    )
    with pytest.raises(PortError, match=r"mode='train': dropout is on \(drop: Dropout\(p=0.1\)\)"):
        check_port(port, *rows, mode="train")
    assert check_port(port, *rows, checks=("outputs",)).passed  # eval mode: dropout is off anyway


# ---- several inputs, a structured output ---------------------------------------------------------------


class TorchBag(nn.Module):
    """Tokens and a mask in; a dict out: the logits and the pooled embedding."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.head = nn.Linear(8, 10)

    def forward(self, tokens, mask):
        pooled = (self.embed(tokens) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return {"logits": self.head(pooled), "pooled": pooled}


class FlaxBag(nnx.Module):
    def __init__(self, dtype: str = "float32"):
        # nnx.Embed's lookup runs in its param_dtype whatever it holds: float64 needs param_dtype float64
        self.embed = nnx.Embed(50, 8, param_dtype=dtype, rngs=nnx.Rngs(0))
        self.head = nnx.Linear(8, 10, rngs=nnx.Rngs(1))

    def __call__(self, tokens, mask):
        pooled = (self.embed(tokens) * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return {"logits": self.head(pooled), "pooled": pooled}


BAG = [("embed.weight", "embed.embedding"), ("head.weight", "head.kernel", transpose()), ("head.bias", "head.bias")]


def bag_inputs(count: int = 24):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50, (count, 7))
    mask = (rng.random((count, 7)) < 0.8).astype(np.float32)
    mask[:, 0] = 1
    return (tokens, mask), rng.integers(0, 10, count)


@pytest.mark.trains
def test_a_model_of_two_inputs_with_a_dict_output_is_checked_leaf_by_leaf():
    inputs, labels = bag_inputs()
    report = check_port(Port("bag", TorchBag, FlaxBag, BAG, submodules=[("head", "head")]), inputs, labels)
    assert report.passed, report.table()
    cases = {row.case for row in report.rows if row.check == "outputs"}
    assert cases == {"output.logits, 24 inputs", "output.pooled, 24 inputs"}
    assert {row.dtype for row in report.rows if row.check == "trajectory"} == {"float32", "float64"}


def test_an_embedding_left_in_float32_is_refused_before_the_float64_run_naming_it():
    """nnx.Embed takes its compute dtype from its parameters at build (float32): its outputs would agree, its
    gradient be rounded to float32. The float64 run refuses it first, naming the module and the fix."""
    inputs, labels = bag_inputs()
    with pytest.raises(PortError, match=r"computes in float32 .*: embed \(Embed\) fixed dtype float32.*param_dtype"):
        check_port(Port("bag", TorchBag, lambda: FlaxBag(), BAG), inputs, labels, checks=FORWARD + ("gradients",))
    report = check_port(Port("bag", TorchBag, lambda: FlaxBag(), BAG), inputs, labels, dtypes=("float32",))
    assert report.passed, report.table()


def test_a_wrong_leaf_is_named_and_input_steps_on_token_ids_are_refused():
    class Swapped(FlaxBag):
        def __call__(self, tokens, mask):
            out = super().__call__(tokens, mask)
            return {"logits": out["logits"], "pooled": out["pooled"] * 1.001}

    inputs, labels = bag_inputs()
    report = check_port(Port("bag", TorchBag, Swapped, BAG), inputs, labels, checks=("outputs",))
    assert [row.case.split(",")[0] for row in report.failures()] == ["output.pooled"] * 2
    with pytest.raises(PortError, match=r"inputs\[0\]: an integer array \(int64, token ids or a mask\) with steps"):
        check_port(Port("bag", TorchBag, FlaxBag, BAG, inputs=[(permute(1, 0),), None]), inputs, labels)
    with pytest.raises(PortError, match=r"the model takes 2 inputs but the port gives one list of steps"):
        check_port(Port("bag", TorchBag, FlaxBag, BAG, inputs=[permute(1, 0)]), inputs, labels)


def test_the_resnet_example_takes_its_mode_from_the_command_line(capsys):
    flags = ["--images", "4", "--checks", "outputs", "--mode", "train"]
    result = run_module("examples.resnet.port", flags, capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("port resnet (train mode): passed")
    assert "not ported (declared): 6 tensors *.num_batches_tracked" in result.stdout
    assert "buffers" in result.stdout


class TorchGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(28, 16, batch_first=True)
        self.head = nn.Linear(16, 10)

    def forward(self, rows):
        return self.head(self.gru(rows)[0][:, -1])


class FlaxGRU(nnx.Module):
    def __init__(self):
        self.rnn = nnx.RNN(nnx.GRUCell(28, 16, rngs=nnx.Rngs(0)))
        self.head = nnx.Linear(16, 10, rngs=nnx.Rngs(1))

    def __call__(self, rows):
        return self.head(self.rnn(rows)[:, -1])


GRU_TABLE = [
    ("gru.weight_ih_l0", "rnn.cell.dense_i.kernel", transpose()),
    ("gru.weight_hh_l0", "rnn.cell.dense_h.kernel", transpose()),
    ("head.weight", "head.kernel", transpose()),
    ("head.bias", "head.bias"),
]


@pytest.mark.parametrize("biases", ["summed", "left out"])
def test_a_torch_gru_onto_nnx_grucell_is_refused_in_one_line_naming_b_hn(rows, biases):
    table = [*GRU_TABLE, (("gru.bias_ih_l0", "gru.bias_hh_l0"), "rnn.cell.dense_i.bias", add())]
    if biases == "left out":
        table[-1] = ("gru.bias_ih_l0", "rnn.cell.dense_i.bias")
    with pytest.raises(PortError, match=r"gru.bias_hh_l0: nn.GRU keeps b_hn inside r \* \(W_hn h \+ b_hn\)"):
        check_port(Port("gru", TorchGRU, FlaxGRU, table), *rows, checks=("weights",))


def test_every_report_states_its_precision_environment():
    import torch

    inputs, labels = bag_inputs(8)
    report = check_port(Port("bag", TorchBag, FlaxBag, BAG), inputs, labels, checks=("outputs",))
    assert list(report.environment) == ["device", "dtypes", "torch fp32 precision", "jax", "threads", "versions"]
    assert report.environment["dtypes"] == "float32, float64"
    jax_line = report.environment["jax"]  # x64 as the user set it, and on for the float64 run
    assert "x64 True" in jax_line or "x64 False (on for the float64 run alone)" in jax_line
    assert "cudnn.rnn" in report.environment["torch fp32 precision"] and f"torch {torch.__version__}" in report.table()
