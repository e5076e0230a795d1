"""References that outlive the process: torch's float64 results saved once, a Flax model checked against them
in a process that cannot import torch; a planted bug caught there; every bad file refused in one line."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from examples.cnn import flax_model
from examples.cnn import port as cnn
from parity import PortError, transpose
from parity.port.reference import check_reference, save_reference
from tests.conftest import ROOT

IMAGES = np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32)
LABELS = np.arange(16) % 10


def flax_cnn(channels=cnn.CHANNELS):
    return flax_model.CNN(nnx.Rngs(0), channels, cnn.HIDDEN)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return save_reference(cnn.make_port(), IMAGES, tmp_path_factory.mktemp("ref") / "cnn.safetensors", LABELS)


CHECK_WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None  # any import of torch now fails
from flax import nnx
from examples.cnn import flax_model
from examples.cnn.port import CHANNELS, HIDDEN, WEIGHTS
from parity.port.reference import check_reference
report = check_reference(sys.argv[1], lambda: flax_model.CNN(nnx.Rngs(0), CHANNELS, HIDDEN), WEIGHTS)
try:
    import torch
except ImportError:
    print("torch could not be imported")
print(report.table())
sys.exit(0 if report.passed else 1)
"""


def test_check_reference_passes_in_a_process_that_cannot_import_torch(reference):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CI": "true"}
    result = subprocess.run(
        [sys.executable, "-c", CHECK_WITHOUT_TORCH, str(reference)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "torch could not be imported" in result.stdout
    assert f"against the reference {reference} (port cnn, saved" in result.stdout
    checks = {line.split()[0] for line in result.stdout.splitlines()[3:] if line.strip()}
    assert {"outputs", "submodules", "gradients", "trajectory"} <= checks


class ReluAfterFc2(flax_model.CNN):
    """A planted bug: an extra ReLU on the logits."""

    def __call__(self, images):
        return nnx.relu(super().__call__(images))


def test_a_flax_model_that_differs_from_the_reference_fails_naming_where(reference):
    report = check_reference(reference, lambda: ReluAfterFc2(nnx.Rngs(0), cnn.CHANNELS, cnn.HIDDEN), cnn.WEIGHTS)
    assert not report.passed
    assert {row.check for row in report.failures()} >= {"outputs", "gradients", "trajectory"}
    assert all(row.passed for row in report.rows if row.check == "submodules")


def test_nothing_is_written_over_a_reference_without_overwrite(reference):
    before = reference.read_bytes()
    with pytest.raises(PortError, match="already there; pass overwrite=True"):
        save_reference(cnn.make_port(), IMAGES, reference, LABELS)
    assert reference.read_bytes() == before


def test_bad_reference_files_are_refused_in_one_line_naming_the_file(reference, tmp_path):
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(reference.read_bytes()[: len(reference.read_bytes()) // 2])
    other_dtype, not_a_reference = tmp_path / "float32.safetensors", tmp_path / "plain.safetensors"
    from safetensors import safe_open

    with safe_open(str(reference), "numpy") as stored:
        metadata = dict(stored.metadata())
    save_file(load_file(str(reference)), str(other_dtype), {**metadata, "dtype": "float32"})
    older = tmp_path / "older.safetensors"
    save_file(load_file(str(reference)), str(older), {**metadata, "format": "seqmnist-port-reference/1"})
    save_file({"x": np.zeros(3)}, str(not_a_reference))
    other_table = [row if row[0] != "fc1.weight" else ("fc1.weight", "fc1.kernel", transpose()) for row in cnn.WEIGHTS]
    cases = [
        (tmp_path / "missing.safetensors", cnn.WEIGHTS, flax_cnn, "no such reference file"),
        (truncated, cnn.WEIGHTS, flax_cnn, "not a readable safetensors file (truncated or corrupt?)"),
        (not_a_reference, cnn.WEIGHTS, flax_cnn, "not a port reference"),
        (older, cnn.WEIGHTS, flax_cnn, "a reference in format seqmnist-port-reference/1, this version reads"),
        (other_dtype, cnn.WEIGHTS, flax_cnn, "holds float32 results; this check is in float64"),
        (reference, other_table, flax_cnn, "saved from another port (cnn): its table differs: 'fc1.weight -> fc1"),
        (reference, cnn.WEIGHTS, lambda: flax_cnn((4, 16)), "holds conv1.bias (8,), but the Flax model's is (4,)"),
    ]
    for path, table, model, message in cases:
        with pytest.raises(PortError) as error:
            check_reference(path, model, table)
        assert str(path) in str(error.value) and message in str(error.value) and "\n" not in str(error.value)
