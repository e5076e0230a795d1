"""The traps the model zoo showed (issue 34), each on a small model of the zoo's form, no `transformers` needed:
JAX's x64 switched on for the float64 run alone, tied weights drawn once, a non-persistent buffer left out of
inference, an attention whose Flax tensors are named by their roles when nothing pairs with it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from torch import nn

from parity import Port, check_port, infer_port, transpose
from parity.port.weights import torch_start

RNG = np.random.default_rng(0)
ROWS = RNG.random((8, 6, 4), dtype=np.float32)
LABELS = np.arange(8) % 5


class TorchTagger(nn.Module):
    """Rows of 4 features -> 5 scores; a non-persistent buffer, as HF's rotary frequencies are."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 5)
        self.register_buffer("frequencies", torch.arange(4.0), persistent=False)

    def forward(self, rows):
        return self.proj(rows).mean(1)


class FlaxTagger(nnx.Module):
    """The same, writing its rows into a buffer with int32 indices beside Python ints: under x64 the two differ
    (int32 against int64) and `dynamic_update_slice` refuses, as a published port did in a float32 run."""

    def __init__(self):
        self.proj = nnx.Linear(4, 5, rngs=nnx.Rngs(0))

    def __call__(self, rows):
        if not jax.config.jax_enable_x64:
            rows = jax.lax.dynamic_update_slice(jnp.zeros_like(rows), rows, (jnp.int32(0), 0, 0))
        return self.proj(rows).mean(1)


TABLE = [("proj.weight", "proj.kernel", transpose()), ("proj.bias", "proj.bias")]


def test_x64_is_on_for_the_float64_run_alone_and_the_float32_run_is_the_users_jax():
    with jax.enable_x64(False):  # the user's JAX, as most users have it
        report = check_port(Port("tagger", TorchTagger, FlaxTagger, TABLE), ROWS, LABELS, steps=2)
        assert report.passed, report.table()
        assert not jax.config.jax_enable_x64  # left as the user set it
        assert jnp.zeros(1).dtype == jnp.float32
    assert "x64 False (on for the float64 run alone)" in report.environment["jax"]


def test_a_non_persistent_buffer_is_left_out_of_inference_not_a_crash():
    inferred = infer_port(TorchTagger, FlaxTagger, ROWS)
    assert inferred.decided, inferred.code()
    assert [row[0] for row in inferred.port.weights] == ["proj.weight", "proj.bias"]


class TorchTied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 4)
        self.head = nn.Linear(4, 5, bias=False)
        self.head.weight = self.embed.weight  # tied, as HF's lm_head

    def forward(self, ids):
        return self.head(self.embed(ids)).mean(1)


def test_tied_names_start_from_one_value_and_are_parameters_not_buffers():
    start = torch_start(Port("tied", TorchTied, FlaxTagger, []), seed=0)
    assert start.ties == {"head.weight": "embed.weight"}
    assert np.array_equal(start.weights["head.weight"], start.weights["embed.weight"])
    assert "head.weight" not in start.buffers


class TorchAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.mix = nn.Linear(8, 8)

    def forward(self, x):
        return self.mix(x)


class FlaxAttention(nnx.Module):
    def __init__(self):
        self.attention = nnx.MultiHeadAttention(2, 8, decode=False, rngs=nnx.Rngs(0))
        self.mix = nnx.Linear(8, 8, rngs=nnx.Rngs(1))

    def __call__(self, x):
        return self.mix(x)


def test_an_unpaired_flax_attention_is_listed_with_each_tensor_named_by_its_role():
    inferred = infer_port(TorchAttention, FlaxAttention, RNG.random((4, 3, 8), dtype=np.float32))
    line = next(line for line in inferred.undecided if line.startswith("flax attention"))
    for role in ("query.kernel [8, 2, 4]", "key.kernel", "value.kernel", "out.kernel [2, 4, 8]"):
        assert role in line, line


@pytest.mark.parametrize("persistent", [True, False])
def test_a_buffer_kept_or_not_is_declared_as_its_state_dict_says(persistent):
    class Model(TorchTagger):
        def __init__(self):
            super().__init__()
            self.register_buffer("scale", torch.ones(5), persistent=persistent)

    table = TABLE + ([("scale", "scale")] if persistent else [])

    class Flax(FlaxTagger):
        def __init__(self):
            super().__init__()
            if persistent:
                self.scale = nnx.BatchStat(jnp.ones(5))

    assert check_port(Port("buffers", Model, Flax, table), ROWS, LABELS, checks=("weights", "outputs")).passed


class TorchRMSNorm(nn.Module):
    """As HF's LlamaRMSNorm: computed in float32 whatever the model's dtype, handed back in it."""

    def __init__(self, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x):
        dtype = x.dtype
        x = x.to(torch.float32)
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)).to(dtype)


class TorchNormed(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj, self.norm, self.head = nn.Linear(4, 8), TorchRMSNorm(8), nn.Linear(8, 5)

    def forward(self, rows):
        return self.head(self.norm(self.proj(rows))).mean(1)


class FlaxRMSNorm(nnx.Module):
    def __init__(self, width: int, epsilon: float):
        self.weight, self.epsilon = nnx.Param(jnp.ones(width)), epsilon

    def __call__(self, x):
        return self.weight * x * jax.lax.rsqrt((x**2).mean(-1, keepdims=True) + self.epsilon)


class FlaxNormed(nnx.Module):
    def __init__(self, epsilon: float = 1e-6):
        self.proj, self.norm = nnx.Linear(4, 8, rngs=nnx.Rngs(0)), FlaxRMSNorm(8, epsilon)
        self.head = nnx.Linear(8, 5, rngs=nnx.Rngs(1))

    def __call__(self, rows):
        return self.head(self.norm(self.proj(rows))).mean(1)


NORMED = [
    *TABLE,
    ("norm.weight", "norm.weight"),
    ("head.weight", "head.kernel", transpose()),
    ("head.bias", "head.bias"),
]
NORMED_SUBMODULES = [("proj", "proj"), ("norm", "norm"), ("head", "head")]


def test_torch_computing_below_float64_is_said_and_what_follows_judged_at_that_precision():
    port = Port("normed", TorchNormed, FlaxNormed, NORMED, submodules=NORMED_SUBMODULES)
    report = check_port(port, ROWS, LABELS, steps=3)
    assert report.passed, report.table()
    said = [row.detail for row in report.rows if row.check == "precision"]
    assert said == ["torch computed norm in float32: what follows is judged at float32's tolerance"]
    float64 = {row.case.split(" ")[0]: row for row in report.rows if row.dtype == "float64"}
    assert float64["proj"].tolerance.startswith("1e-12")  # before the norm: float64's own tolerance
    for check in ("outputs", "submodules", "units", "gradients", "trajectory"):
        rows = [row for row in report.rows if row.dtype == "float64" and row.check == check]
        judged = [row.case.split(" (flax")[0] for row in rows if row.detail.startswith("judged at float32's tolerance")]
        # chained, what follows the norm; unit by unit (on torch's own inputs), the norm alone
        expected = {"submodules": ["norm", "head"], "units": ["norm"]}.get(check, [rows[0].case.split(" (flax")[0]])
        assert judged == expected, (check, report.table())
    bug = Port("normed", TorchNormed, lambda: FlaxNormed(epsilon=1e-2), NORMED, submodules=NORMED_SUBMODULES)
    report = check_port(bug, ROWS, LABELS, checks=("outputs", "submodules"))  # a real bug still fails, at the norm
    assert report.first_divergence.startswith("float64 submodules: norm (flax norm): judged at float32"), report.table()


class TorchProjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(8, 8)
        self.out = nn.Linear(8, 5)

    def forward(self, x):
        return self.out(torch.tanh(self.q(x))).mean(1)


class FlaxEinsumProjection(nnx.Module):
    """As a Gemma-style port writes it: the projection an `nnx.Einsum` with its heads split out."""

    def __init__(self):
        self.q = nnx.Einsum("btd,dnh->btnh", (8, 2, 4), (2, 4), rngs=nnx.Rngs(0))
        self.out = nnx.Linear(8, 5, rngs=nnx.Rngs(1))

    def __call__(self, x):
        q = jnp.tanh(self.q(x))
        return self.out(q.reshape(*q.shape[:-2], -1)).mean(1)


def test_an_nnx_einsum_kernel_pairs_with_a_linear_and_is_decided():
    inferred = infer_port(TorchProjection, FlaxEinsumProjection, RNG.random((4, 3, 8), dtype=np.float32))
    assert inferred.decided and not inferred.port.not_ported, inferred.code()
    rows = {row[0]: tuple(str(part) for part in row[1:]) for row in inferred.port.weights}
    assert rows["q.weight"] == ("q.kernel", "transpose()", "reshape()")
    assert rows["q.bias"] == ("q.bias", "reshape()")
