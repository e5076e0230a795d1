"""The two example ports pass every check in float32 and float64, and each planted bug is caught where it is.

A planted bug is a one-line change a porter could make: a table row or a Flax setting. Each test asserts
the report names the first submodule whose output diverges, in the order PyTorch ran them.
"""

from __future__ import annotations

import pytest
from flax import nnx

from examples.cnn import port as cnn
from examples.mnist import mnist_test_inputs
from examples.transformer import port as transformer
from parity import PortError, check_port
from parity.port.transforms import permute, transpose
from tests.conftest import run_module

FORWARD = ("outputs", "submodules")


@pytest.fixture(scope="module")
def images():
    return mnist_test_inputs(32, channel_axis=True)


@pytest.fixture(scope="module")
def rows():
    return mnist_test_inputs(32, channel_axis=False)


def cnn_table(**rows):
    return [rows.get(row[0], row) for row in cnn.WEIGHTS]


def float64_divergence(report) -> str:
    assert not report.passed
    assert report.first_divergence is not None and report.first_divergence.startswith("float64 submodules: ")
    return report.first_divergence.removeprefix("float64 submodules: ").split(" (flax")[0]


@pytest.mark.trains  # the training check runs Adam: left out of the inner loop
def test_the_cnn_port_passes_every_check_in_float32_and_float64(images):
    report = check_port(cnn.make_port(), *images)
    assert report.passed, report.table()
    assert {(row.check, row.dtype) for row in report.rows} >= {
        (check, dtype)
        for check in ("weights", "outputs", "submodules", "gradients", "trajectory")
        for dtype in ("float32", "float64")
    }


@pytest.mark.trains
def test_the_transformer_port_passes_every_check_in_float32_and_float64(rows):
    report = check_port(transformer.make_port(), *rows)
    assert report.passed, report.table()
    assert len([row for row in report.rows if row.check == "submodules"]) == 2 * len(transformer.submodules())


def test_cnn_kernel_not_permuted_is_refused_with_the_permutation_to_use(images):
    with pytest.raises(PortError, match=r"permute\(2, 3, 1, 0\)\?"):
        check_port(cnn.make_port(cnn_table(**{"conv1.weight": ("conv1.weight", "conv1.kernel")})), *images)


def test_cnn_kernel_with_its_spatial_axes_swapped_diverges_at_conv1(images):
    swapped = cnn_table(**{"conv1.weight": ("conv1.weight", "conv1.kernel", permute(3, 2, 1, 0))})
    report = check_port(cnn.make_port(swapped), *images, checks=FORWARD)
    assert float64_divergence(report) == "conv1"


def test_cnn_flatten_order_left_as_pytorchs_diverges_at_fc1(images):
    # same shapes, so only the numbers can tell: fc1 reads (row, column, channel) features in Flax
    unordered = cnn_table(**{"fc1.weight": ("fc1.weight", "fc1.kernel", transpose())})
    report = check_port(cnn.make_port(unordered), *images, checks=FORWARD)
    assert float64_divergence(report) == "fc1"
    passed = {row.case.split(" ")[0]: row.passed for row in report.rows if row.dtype == "float64"}
    assert passed["conv1"] and passed["conv2"] and not passed["fc1"]


def test_transformer_query_and_key_swapped_diverges_at_the_first_attention(rows):
    swapped = transformer.weights(("key", "query", "value"))
    report = check_port(transformer.make_port(swapped), *rows, checks=FORWARD)
    assert float64_divergence(report) == "encoder.layers.0.self_attn"


def test_transformer_flax_default_layer_norm_epsilon_diverges_at_the_first_norm(rows):
    report = check_port(transformer.make_port(flax_options={"epsilon": 1e-6}), *rows, checks=FORWARD)
    assert float64_divergence(report) == "encoder.layers.0.norm1"


def test_transformer_tanh_gelu_diverges_at_the_first_feedforward_output(rows):
    report = check_port(transformer.make_port(flax_options={"gelu_tanh": True}), *rows, checks=FORWARD)
    assert float64_divergence(report) == "encoder.layers.0.linear2"


def test_flax_attention_float32_softmax_passes_in_float32_and_is_caught_in_float64(rows):
    """jax.nn.dot_product_attention computes its softmax in float32 even for float64 inputs."""
    port = transformer.make_port(flax_options={"attention": nnx.dot_product_attention})
    report = check_port(port, *rows, checks=FORWARD)
    assert all(row.passed for row in report.rows if row.dtype == "float32"), report.table()
    assert float64_divergence(report) == "encoder.layers.0.self_attn"


@pytest.mark.parametrize("example", ["cnn", "transformer"])
def test_each_example_proves_itself_from_the_command_line(example, capsys):
    """The entry point's `main` and its printout; the full check runs above, so this one runs two checks."""
    result = run_module(f"examples.{example}.port", ["--images", "4", "--checks", "weights,outputs"], capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"port {example}: passed")
    assert {line.split()[0] for line in result.stdout.splitlines()[2:-1] if line.strip()} >= {"weights", "outputs"}
    assert "submodules" not in result.stdout and result.stdout.strip().splitlines()[-1].startswith(f"{example}: ")


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--checks", "outputs,training"], "--checks: unknown training"),
        (["--images", "0"], "--images must be positive"),
    ],
)
def test_example_flags_are_checked_before_anything_runs(capsys, flags, fragment):
    from tests.conftest import assert_one_line, run_main

    code, _, err = run_main(cnn.main, flags, capsys)
    assert_one_line(code, err, 2, fragment)


@pytest.mark.slow
def test_a_wider_transformers_float32_trajectory_is_judged_by_each_frameworks_own_rounding(capsys):
    """With JAX's x64 off in the float32 run (as users run it), optax's Adam computes its bias correction
    1 - b2^t in float32 and drifts from its own float64 run ten times further than torch does (loss 3.0e-6
    against 2.9e-7 at width 256): the envelope is the larger drift, so a correct port passes."""
    flags = ["--width", "256", "--layers", "4", "--checks", "trajectory"]
    result = run_module("examples.transformer.port", flags, capsys)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "10x f32-f64 drift" in result.stdout
