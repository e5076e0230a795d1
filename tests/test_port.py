"""The port API itself: the transforms, the declaration's checks and their one-line errors, the report."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.cnn import port as cnn
from examples.mnist import mnist_test_inputs
from parity import PortError, assert_port, check_port
from parity.port import transforms
from parity.port.table import declared
from parity.port.transforms import concat, permute, reorder_blocks, reshape, split, transpose
from parity.port.weights import to_flax, to_torch, torch_start

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


def changed_table(**rows):
    """The CNN's weight table with some rows replaced (keyed by their torch name) or removed (None)."""
    table = [rows.get(row[0], row) for row in cnn.WEIGHTS]
    return [row for row in table if row is not None]


@settings(max_examples=60, deadline=None)
@given(shape=shapes, data=st.data())
def test_a_permutation_round_trips_exactly_and_moves_axes_like_numpy(shape, data):
    axes = data.draw(st.permutations(range(len(shape))))
    array = np.random.default_rng(0).normal(size=shape)
    (moved,) = transforms.apply([permute(*axes)], [array], [])
    np.testing.assert_array_equal(moved, np.transpose(array, axes))
    (back,) = transforms.invert([permute(*axes)], [moved], [shape])
    np.testing.assert_array_equal(back, array)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 5), columns=st.integers(1, 5), parts=st.integers(2, 4), data=st.data())
def test_a_fused_block_split_transposed_and_reshaped_round_trips_exactly(rows, columns, parts, data):
    array = np.random.default_rng(1).normal(size=(parts * rows, columns))
    steps = [split(parts), transpose(), reshape()]
    targets = [(columns, rows, 1)] * parts
    pieces = transforms.apply(steps, [array], targets)
    # block i of the fused rows is piece i, transposed: what a port of q/k/v projections needs
    for i, piece in enumerate(pieces):
        np.testing.assert_array_equal(piece[..., 0], array[i * rows : (i + 1) * rows].T)
    (back,) = transforms.invert(steps, pieces, [array.shape])
    np.testing.assert_array_equal(back, array)


@settings(max_examples=40, deadline=None)
@given(blocks=st.integers(2, 5), width=st.integers(1, 3), data=st.data())
def test_reordered_blocks_and_concatenations_round_trip_exactly(blocks, width, data):
    order = data.draw(st.permutations(range(blocks)))
    array = np.arange(blocks * width * 2, dtype=np.float64).reshape(blocks * width, 2)
    (reordered,) = transforms.apply([reorder_blocks(*order)], [array], [])
    assert np.array_equal(reordered[:width], array[order[0] * width : (order[0] + 1) * width])
    (back,) = transforms.invert([reorder_blocks(*order)], [reordered], [array.shape])
    np.testing.assert_array_equal(back, array)
    parts = [array[:width], array[width:]]
    (joined,) = transforms.apply([concat()], parts, [])
    again = transforms.invert([concat()], [joined], [part.shape for part in parts])
    assert all(np.array_equal(a, b) for a, b in zip(again, parts, strict=True))


def test_the_fix_guessed_for_a_conv_kernel_is_the_permutation_to_hwio():
    assert transforms.guess_fix((6, 1, 5, 5), (5, 5, 1, 6)) == "permute(2, 3, 1, 0)?"
    assert transforms.guess_fix((10, 64), (64, 10)) == "transpose()?"
    assert transforms.guess_fix((96, 32), (32, 4, 24)) == "transpose(), reshape()?"
    assert "no step fixes it" in transforms.guess_fix((6, 1, 5, 5), (5, 5, 1, 8))


def test_the_cnn_tables_conversions_are_exact_both_ways():
    port = cnn.make_port()
    start = torch_start(port)
    weights, pair = start.weights, declared(port, start, "eval")
    flax = to_flax(pair.entries, weights, pair.flax_shapes)
    assert flax["conv1.kernel"].shape == (5, 5, 1, 8)
    np.testing.assert_array_equal(flax["conv1.kernel"][:, :, 0, 3], weights["conv1.weight"][3, 0])
    back = to_torch(pair.entries, flax, pair.torch_shapes)
    assert all(np.array_equal(back[name], weights[name]) for name in weights)


def one_line_port_error(port) -> str:
    with pytest.raises(PortError) as caught:
        declared(port, torch_start(port), "eval")
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_table_entry_naming_a_tensor_that_does_not_exist_is_one_line_with_the_closest_name():
    table = changed_table(**{"conv1.weight": ("conv1.wieght", "conv1.kernel", permute(2, 3, 1, 0))})
    message = one_line_port_error(cnn.make_port(table))
    assert "'conv1.wieght' does not exist" in message and "did you mean 'conv1.weight'" in message


def test_a_flax_path_that_does_not_exist_is_one_line():
    table = changed_table(**{"fc2.bias": ("fc2.bias", "fc2.bais")})
    assert "'fc2.bais' does not exist" in one_line_port_error(cnn.make_port(table))


def test_a_kernel_left_unpermuted_names_both_shapes_and_guesses_the_permutation():
    table = changed_table(**{"conv1.weight": ("conv1.weight", "conv1.kernel")})
    message = one_line_port_error(cnn.make_port(table))
    assert "conv1.weight (8, 1, 5, 5)" in message and "conv1.kernel is (5, 5, 1, 8)" in message
    assert message.endswith("permute(2, 3, 1, 0)?")


def test_a_shape_no_transform_fixes_says_so():
    table = changed_table(**{"conv1.weight": None, "conv2.weight": ("conv2.weight", "conv1.kernel")})
    message = one_line_port_error(cnn.make_port(table))
    assert "no step fixes it: 3200 values against 200" in message


def test_a_module_without_a_mapped_parameter_is_one_line_naming_it():
    table = changed_table(**{"fc2.weight": None, "fc2.bias": None})
    message = one_line_port_error(cnn.make_port(table))
    assert "leave" in message and "fc2.weight, fc2.bias" in message and "module fc2 with nothing mapped" in message


def test_a_module_with_only_part_mapped_says_what_is_mapped():
    message = one_line_port_error(cnn.make_port(changed_table(**{"fc2.bias": None})))
    assert "leaves out: fc2.bias" in message and "fc2: only fc2.weight mapped" in message
    assert "nothing mapped" not in message


def test_a_tensor_mapped_twice_is_one_line():
    table = [*cnn.WEIGHTS, ("fc2.bias", "fc2.bias")]
    assert "mapped twice" in one_line_port_error(cnn.make_port(table))


def test_a_declared_submodule_that_does_not_exist_is_one_line():
    port = cnn.make_port()
    port = type(port)(**{**port.__dict__, "submodules": [("conv3", "conv1")]})
    images, labels = mnist_test_inputs(4, channel_axis=True)
    with pytest.raises(PortError, match="'conv3' does not exist") as caught:
        check_port(port, images, labels, checks=("submodules",), dtypes=("float32",))
    assert "\n" not in str(caught.value)


def test_a_flax_model_fixed_to_float32_is_refused_in_float64():
    images, labels = mnist_test_inputs(4, channel_axis=True)
    port = cnn.make_port(flax_options={"dtype": "float32"})
    with pytest.raises(PortError, match="computes in float32 with float64 weights"):
        check_port(port, images, labels, checks=("outputs",), dtypes=("float64",))


def test_assert_port_raises_with_the_table_and_the_first_divergence():
    images, labels = mnist_test_inputs(8, channel_axis=True)
    swapped = changed_table(**{"conv1.weight": ("conv1.weight", "conv1.kernel", permute(3, 2, 1, 0))})
    with pytest.raises(AssertionError) as caught:
        assert_port(cnn.make_port(swapped), images, labels, checks=("outputs", "submodules"))
    text = str(caught.value)
    assert text.startswith("port cnn: FAILED") and "first divergence: float64 submodules: conv1" in text
    assert "FAIL" in text.splitlines()[2]  # the first row after the header is float32's outputs


def test_an_unknown_check_is_one_line():
    images, labels = mnist_test_inputs(4, channel_axis=True)
    with pytest.raises(PortError, match="unknown logitz"):
        check_port(cnn.make_port(), images, labels, checks=("logitz",))


def test_importing_the_api_loads_neither_framework():
    import subprocess
    import sys

    from tests.conftest import ROOT

    probe = "import sys, parity; print(sorted({'torch', 'jax', 'flax'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
