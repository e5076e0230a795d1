"""The port API's bad inputs: each mistake is one PortError line naming the argument, a model that refuses the
inputs is one line with its own error as the cause, and no check passes on nothing (parity/port/arguments.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from flax import nnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from parity import InferredPort, Port, PortError, check_port, check_reference, infer_port, save_reference
from parity.port.transforms import permute, transpose


class TorchRowConv(nn.Module):
    """Each image's 28 rows as 28 steps of 28 pixels: a Conv1d over the steps, a mean, a LayerNorm, a Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(28, 16, 3, padding=1)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.norm(self.conv(x.transpose(1, 2)).mean(dim=2)))


class FlaxRowConv(nnx.Module):
    def __init__(self, rngs=None):
        rngs = rngs or nnx.Rngs(0)
        self.conv = nnx.Conv(28, 16, kernel_size=(3,), padding=1, rngs=rngs)
        self.norm = nnx.LayerNorm(16, epsilon=1e-5, rngs=rngs)  # torch's eps
        self.head = nnx.Linear(16, 10, rngs=rngs)

    def __call__(self, x):
        return self.head(self.norm(self.conv(x).mean(axis=1)))


class FlaxRowConvNeedingRngs(FlaxRowConv):
    """A published port's habit: `__call__` requires `rngs=` (issue 34's first finding)."""

    def __call__(self, x, *, rngs):
        return super().__call__(x)


WEIGHTS = [
    ("conv.weight", "conv.kernel", permute(2, 1, 0)),
    ("conv.bias", "conv.bias"),
    ("norm.weight", "norm.scale"),
    ("norm.bias", "norm.bias"),
    ("head.weight", "head.kernel", transpose()),
    ("head.bias", "head.bias"),
]
PORT = Port("row-conv", TorchRowConv, FlaxRowConv, WEIGHTS, submodules=[("conv", "conv", permute(0, 2, 1))])
FORWARD = {"checks": ("outputs",), "dtypes": ("float64",)}


def inputs(rows=8):
    rng = np.random.default_rng(0)
    return rng.random((rows, 28, 28), dtype=np.float32), np.arange(rows) % 10


def one_line(error: pytest.ExceptionInfo, *fragments: str) -> str:
    text = str(error.value)
    assert "\n" not in text, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    return text


def test_the_correct_port_passes_so_that_each_refusal_below_is_the_mistakes_alone():
    report = check_port(PORT, *inputs(), **FORWARD)
    assert report.passed, report.table()


def test_zero_inputs_are_refused_not_passed():
    x, y = inputs()
    with pytest.raises(PortError) as error:
        check_port(PORT, x[:0], y[:0], **FORWARD)
    one_line(error, "check_port: inputs: 0 rows", "(0, 28, 28)", "at least one example")


def test_inputs_of_the_wrong_shape_are_the_torch_models_refusal_in_one_line_with_its_error_as_the_cause():
    x, y = inputs()
    with pytest.raises(PortError) as error:
        check_port(PORT, x[:, :, :20], y, **FORWARD)
    one_line(error, "check_port: the torch model refused the inputs ((8, 28, 20) float32): RuntimeError:")
    assert isinstance(error.value.__cause__, RuntimeError)


def test_labels_past_the_models_outputs_are_refused_before_any_check_runs():
    x, y = inputs()
    with pytest.raises(PortError) as error:
        check_port(PORT, x, y + 50, **FORWARD)
    one_line(error, "check_port: labels: 57 is past the model's 10 outputs", "0 to 9")
    with pytest.raises(PortError) as error:
        check_port(PORT, x, y - 10, **FORWARD)
    one_line(error, "labels: -10 is negative")
    with pytest.raises(PortError) as error:
        check_port(PORT, x, y + 0.5, **FORWARD)
    one_line(error, "labels: an array of float64, expected integer class indices")


def test_a_model_instance_where_a_factory_belongs_says_how_to_pass_one():
    for port, argument, cls in [
        (Port("p", TorchRowConv(), FlaxRowConv, WEIGHTS), "torch_model", "TorchRowConv"),
        (Port("p", TorchRowConv, FlaxRowConv(), WEIGHTS), "flax_model", "FlaxRowConv"),
    ]:
        with pytest.raises(PortError) as error:
            check_port(port, *inputs(), **FORWARD)
        one_line(error, f"check_port: {argument}: a {cls} instance, expected a factory", "`lambda: model`")


def test_fewer_labels_than_inputs_blame_the_labels():
    x, y = inputs()
    with pytest.raises(PortError) as error:
        check_port(PORT, x, y[:3], **FORWARD)
    one_line(error, "check_port: labels: 3 labels for 8 input rows")


def test_nan_in_the_inputs_is_refused_before_the_run():
    x, y = inputs()
    x[2, 5] = np.nan
    with pytest.raises(PortError) as error:
        check_port(PORT, x, y, **FORWARD)
    one_line(error, "check_port: inputs[0]: 28 NaN or inf values (the first at (2, 5, 0)), expected finite numbers")


def test_the_suites_arguments_device_weights_and_batches_are_refused_in_one_line_each():
    """check_port's `device`, `weights` (the start weights) and `batches` (the trajectory's), each wrong."""
    x, y = inputs()
    with pytest.raises(PortError) as error:
        check_port(PORT, x, y, device="tpu", **FORWARD)
    one_line(error, "device: expected 'cpu' or 'gpu', got 'tpu'")
    start = {name: array.detach().numpy() for name, array in TorchRowConv().state_dict().items()}
    with pytest.raises(PortError) as error:
        check_port(PORT, x, y, weights={k: v for k, v in start.items() if k != "norm.bias"}, **FORWARD)
    one_line(error, "check_port: weights: 'norm.bias' is missing; the torch model's state_dict has its shape (16,)")
    with pytest.raises(PortError) as error:
        check_port(PORT, x, y, weights={**start, "conv.bias": np.zeros(3, np.float32)}, **FORWARD)
    one_line(error, "check_port: weights: 'conv.bias' has shape (3,); the torch model's state_dict has its shape (16,)")
    with pytest.raises(PortError) as error:
        check_port(PORT, x, y, weights={**start, "extra": np.zeros(3, np.float32)}, **FORWARD)
    one_line(error, "check_port: weights: 'extra' has shape (3,); the torch model's state_dict has no such tensor")
    trajectory = {"checks": ("trajectory",), "dtypes": ("float64",)}
    for batches, expected in [
        ([np.array([0, 8])], "batches[0]: row indices must lie in [0, 8), got 0..8"),
        ([np.array([0.5])], "batches[0]: expected a 1-D array of row indices"),
        ([], "batches: expected at least one batch"),
    ]:
        with pytest.raises(PortError) as error:
            check_port(PORT, x, y, batches=batches, **trajectory)
        one_line(error, expected)


def test_the_given_start_weights_and_batches_are_the_ones_checked():
    """`weights=` replaces the noisy start (a torch model holding them gives the report's float64 loss), and
    `batches=` are the trajectory's steps (their count is the row's)."""
    import torch

    x, y = inputs()
    model = TorchRowConv().double()
    start = {name: array.detach().numpy().astype(np.float32) for name, array in model.state_dict().items()}
    report = check_port(PORT, x, y, checks=("gradients",), dtypes=("float64",), weights=start)
    model.load_state_dict({name: torch.from_numpy(array.astype(np.float64)) for name, array in start.items()})
    with torch.no_grad():
        loss = float(
            torch.nn.functional.cross_entropy(model(torch.from_numpy(x.astype(np.float64))), torch.from_numpy(y))
        )
    assert report.passed and f"loss {loss:.6g}" in report.rows[0].detail, (loss, report.rows[0].detail)
    batches = [np.array([1, 3]), np.array([5, 7]), np.array([0, 2])]
    report = check_port(PORT, x, y, checks=("trajectory",), dtypes=("float64",), batches=batches)
    assert report.passed and report.rows[0].case == "adam, 3 steps", report.table()


def test_infer_port_on_a_name_says_what_it_expected():
    with pytest.raises(PortError) as error:
        infer_port("resnet", FlaxRowConv, inputs()[0])
    one_line(error, "infer_port: torch_model: 'resnet' (a str), expected a model or a factory that builds a")


def test_infer_ports_result_is_taken_wherever_a_port_is(tmp_path):
    inferred = InferredPort(PORT, [""] * len(WEIGHTS), [], [])
    x, y = inputs()
    assert check_port(inferred, x, y, **FORWARD).passed
    reference = save_reference(inferred, x, tmp_path / "ref.safetensors", y, steps=1)
    assert check_reference(reference, FlaxRowConv, inferred).passed


def test_a_flax_model_that_refuses_the_inputs_is_one_line_naming_the_side():
    port = Port("rngs", TorchRowConv, FlaxRowConvNeedingRngs, WEIGHTS)
    with pytest.raises(PortError) as error:
        check_port(port, *inputs(), **FORWARD)
    one_line(error, "check_port: the Flax model refused the inputs ((8, 28, 28) float64): TypeError:", "rngs")
    assert isinstance(error.value.__cause__, TypeError)


def test_save_and_check_reference_refuse_the_same_mistakes(tmp_path):
    x, y = inputs()
    with pytest.raises(PortError) as error:
        save_reference(PORT, x[:0], tmp_path / "ref.safetensors")
    one_line(error, "save_reference: inputs: 0 rows")
    assert not (tmp_path / "ref.safetensors").exists()
    with pytest.raises(PortError) as error:
        check_reference(tmp_path / "ref.safetensors", FlaxRowConv(), WEIGHTS)
    one_line(error, "check_reference: flax_model: a FlaxRowConv instance", "`lambda: model`")


# Each draw makes one argument bad and keeps the others right: the function must answer with a PortError
# (or, for a value that is in fact usable, a report), never another exception, and never pass on no inputs.
BAD_PORTS = st.sampled_from(
    [None, "resnet", 3, WEIGHTS, Port("p", TorchRowConv(), FlaxRowConv, WEIGHTS), Port("p", TorchRowConv, 7, WEIGHTS)]
)
BAD_INPUTS = st.one_of(
    st.integers(0, 3).map(lambda rows: np.zeros((rows, 28, 28), np.float32)[: 0 if rows == 3 else rows]),
    st.sampled_from([None, (), [], "images", 1.5, np.float32(1.0), np.array(["a"] * 8)]),
    st.tuples(st.integers(1, 27), st.integers(1, 40)).map(lambda s: np.zeros((8, s[0], s[1]), np.float32)),
    st.sampled_from([np.nan, np.inf, -np.inf]).map(lambda v: np.full((8, 28, 28), v, np.float32)),
)
BAD_LABELS = st.one_of(
    st.integers(0, 7).map(lambda n: np.arange(n) % 10),
    st.integers(10, 10**6).map(lambda v: np.full(8, v)),
    st.integers(-(10**6), -1).map(lambda v: np.full(8, v)),
    st.sampled_from([None, "cats", np.zeros((8, 2), np.int64), np.full(8, 0.5), np.full(8, np.nan)]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    function=st.sampled_from(["check_port", "save_reference", "infer_port", "check_reference"]),
    bad=st.sampled_from(["port", "inputs", "labels"]),
    data=st.data(),
)
def test_bad_arguments_are_a_port_error_or_a_real_report_never_another_exception(function, bad, data):
    x, y = inputs()
    bad = "port" if function == "check_reference" else bad  # its arguments: a file, a Flax factory, a table
    port = data.draw(BAD_PORTS) if bad == "port" else PORT
    xs = data.draw(BAD_INPUTS) if bad == "inputs" else x
    labels = data.draw(BAD_LABELS) if bad == "labels" else y
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ref.safetensors"
        try:
            if function == "check_port":
                report = check_port(port, xs, labels, **FORWARD)
            elif function == "save_reference":
                save_reference(port, xs, path, labels, steps=1)
                report = check_reference(path, FlaxRowConv, WEIGHTS)
            elif function == "infer_port":
                torch_model = port.torch_model if isinstance(port, Port) else port
                inferred = infer_port(torch_model, FlaxRowConv, xs, max_trials=2)
                report = check_port(inferred, x, labels, **FORWARD)
            else:
                flax_model = port.flax_model if isinstance(port, Port) else port
                save_reference(PORT, x, path, y, steps=1)
                report = check_reference(path, flax_model, WEIGHTS)
        except PortError as error:
            assert "\n" not in str(error), str(error)
            return
    rows = np.asarray(xs).shape[:1] if bad == "inputs" else x.shape[:1]
    assert rows != (0,) or not report.passed, "a check passed on no inputs"
    assert any(row.passed is not None for row in report.rows)
