"""A float32 failure on an accelerator is told apart from TF32: the failing rows rerun at 'highest'.

No GPU here, so the Flax side below rounds its float32 matmul inputs to TF32 (8 exponent, 10 mantissa bits,
`lax.reduce_precision`) exactly when JAX's matmul precision is not 'highest', as a GPU does, and the check is
told it computes on an accelerator. The rerun itself (the precision switched, the rows computed again) is real.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from torch import nn

from parity import Port, check_port, transpose
from parity.port import precision

CHECKS = {"checks": ("outputs", "gradients", "trajectory"), "steps": 3, "batch_size": 8}


class TorchHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x)


class TF32Head(nnx.Module):
    """nnx.Linear's parameters; its float32 product rounded as a GPU's TF32 does unless precision is 'highest'."""

    def __init__(self, bias_scale: float = 1.0):
        self.fc = nnx.Linear(64, 10, rngs=nnx.Rngs(0))
        self.bias_scale = bias_scale

    def __call__(self, x):
        kernel, bias = self.fc.kernel.get_value(), self.fc.bias.get_value() * self.bias_scale
        if x.dtype == jnp.float32 and jax.config.jax_default_matmul_precision != "highest":  # type: ignore[attr-defined]
            x, kernel = (jax.lax.reduce_precision(a, exponent_bits=8, mantissa_bits=10) for a in (x, kernel))
        return x @ kernel + bias


TABLE = [("fc.weight", "fc.kernel", transpose()), ("fc.bias", "fc.bias")]
INPUTS = np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32)
LABELS = np.arange(16) % 10


def test_jax_precision_is_reduced_only_on_an_accelerator_short_of_highest():
    assert precision.reduced_precision("gpu", None) and precision.reduced_precision("tpu", "default")
    assert precision.reduced_precision("cuda", "bfloat16_3x")
    assert not precision.reduced_precision("cpu", None)
    assert not precision.reduced_precision("gpu", "highest") and not precision.reduced_precision("gpu", "float32")


def test_a_float32_failure_from_tf32_alone_is_said_to_be_tf32(monkeypatch):
    monkeypatch.setattr(precision, "jax_reduced_precision", lambda: True)
    report = check_port(Port("tf32", TorchHead, TF32Head, TABLE), INPUTS, LABELS, **CHECKS)
    failed = report.failures()
    assert failed and {row.dtype for row in failed} == {"float32"}, report.table()  # float64 is never rounded
    assert {row.check for row in failed} == {"outputs", "gradients", "trajectory"}
    for row in failed:
        assert "TF32: passes at JAX matmul precision 'highest'" in row.detail, report.table()


def test_a_real_bug_is_said_not_to_be_tf32(monkeypatch):
    monkeypatch.setattr(precision, "jax_reduced_precision", lambda: True)
    report = check_port(Port("bug", TorchHead, lambda: TF32Head(1.001), TABLE), INPUTS, LABELS, **CHECKS)
    failed = [row for row in report.failures() if row.dtype == "float32"]
    assert failed, report.table()
    assert all("not TF32: fails at JAX matmul precision 'highest' too" in row.detail for row in failed)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="on an accelerator the rows are rerun")
def test_on_the_cpu_nothing_is_rerun_or_annotated():
    report = check_port(Port("tf32", TorchHead, TF32Head, TABLE), INPUTS, LABELS, **CHECKS)
    failed = report.failures()
    assert failed and not any("TF32" in row.detail for row in failed), report.table()
