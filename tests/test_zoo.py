"""The port API on Hugging Face `transformers` models as they ship (issue 34): `ViTForImageClassification` and
`GPT2LMHeadModel` from small configs, each against a Flax NNX port written here (examples/vit, examples/gpt2),
with no wrapper around either model. Each example passes; each planted bug fails at its own submodule;
`infer_port` decides both tables whole, equal to the hand-written ones. Skipped without the `[zoo]` extra."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("transformers", reason="the model zoo needs the [zoo] extra (transformers)")

from flax import nnx

from examples.gpt2 import flax_model as gpt2_flax
from examples.gpt2 import port as gpt2
from examples.gpt2 import torch_model as gpt2_torch
from examples.mnist import mnist_test_inputs, mnist_test_tokens
from examples.vit import flax_model as vit_flax
from examples.vit import port as vit
from examples.vit import torch_model as vit_torch
from parity import PortError, check_port, infer_port
from tests.conftest import run_module

FORWARD = ("outputs", "submodules")


@pytest.fixture(scope="module")
def images():
    return mnist_test_inputs(16, channel_axis=True)


@pytest.fixture(scope="module")
def tokens():
    return mnist_test_tokens(16)


def divergence(report) -> str:
    """The torch submodule the report's first divergence names."""
    assert not report.passed and report.first_divergence, report.table()
    return report.first_divergence.split(": ", 1)[1].split(" (flax")[0]


def table_of(weights) -> set[tuple[str, ...]]:
    return {tuple(str(part) for part in row) for row in weights}


@pytest.mark.trains
@pytest.mark.parametrize("name", ["vit", "gpt2"])
def test_each_zoo_example_passes_every_check_from_its_command_line(name, capsys):
    # 16 images: a trajectory batch's rows (check_port's batch_size), so its steps reuse the gradients program
    result = run_module(f"examples.{name}.port", ["--images", "16"], capsys)
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.stdout.startswith(f"port {name}: passed")
    for check in ("weights", "outputs", "submodules", "gradients", "trajectory"):
        assert f"\n{check} " in result.stdout, check


@pytest.mark.parametrize("bug", list(vit.planted_bugs()))
def test_each_planted_vit_bug_fails_at_its_own_submodule(bug, images):
    port, where = vit.planted_bugs()[bug]
    report = check_port(port, *images, checks=FORWARD)
    assert divergence(report) == where
    if bug in ("tanh GELU for HF's exact one", "softmax in float32"):  # below float32's rounding: float64 alone
        assert all(row.passed for row in report.rows if row.dtype == "float32"), report.table()


@pytest.mark.parametrize("bug", [bug for bug in gpt2.planted_bugs() if "tie" not in bug])
def test_each_planted_gpt2_bug_fails_at_its_own_submodule(bug, tokens):
    port, where = gpt2.planted_bugs()[bug]
    assert divergence(check_port(port, *tokens, checks=FORWARD)) == where


def test_a_tie_is_one_tensor_and_a_broken_one_fails_the_gradients_at_the_embedding(tokens):
    """HF ties `lm_head.weight` to `transformer.wte.weight`. Mapped once, both names hold one value and the
    Flax embedding used twice gets the sum of both uses' gradients; a Flax model with its own head loads the
    same values (its outputs agree) but its embedding's gradient is one use's: the gradient check fails there."""
    report = check_port(gpt2.make_port(), *tokens, checks=("weights", "gradients"))
    assert report.passed, report.table()
    assert "tied (one tensor): lm_head.weight is transformer.wte.weight" in report.rows[0].detail
    broken, where = gpt2.planted_bugs()["the tie broken (a separate lm_head)"]
    report = check_port(broken, *tokens, checks=("outputs", "gradients"))
    assert [(row.check, row.passed) for row in report.rows] == [
        ("outputs", True),
        ("gradients", False),
        ("outputs", True),
        ("gradients", False),
    ], report.table()
    assert report.failures()[0].detail.startswith(f"worst {where}")


def test_a_tie_mapped_twice_onto_one_flax_parameter_is_refused_naming_the_tie(tokens):
    twice = [*gpt2.weights(), ("lm_head.weight", "wte.embedding")]
    with pytest.raises(PortError, match=r"'wte.embedding' is mapped twice; torch 'lm_head.weight' is tied to"):
        check_port(gpt2.make_port(twice), *tokens, checks=("weights",))


def test_hf_outputs_not_picked_are_one_line_each(images, tokens):
    """A ModelOutput compared as the dict it is: the structures differ, and the row names both and the fix;
    GPT-2's cache in its output is refused in one line naming its path and type."""
    report = check_port(dataclasses.replace(vit.make_port(), torch_forward=None), *images, checks=("outputs",))
    detail = report.failures()[0].detail
    assert (
        detail.startswith("torch returns output.logits; Flax returns output; pick the arrays")
        and "torch_forward" in detail
    )
    with pytest.raises(PortError, match=r"torch output.cache: the model returns a DynamicCache there, not an array"):
        check_port(dataclasses.replace(gpt2.make_port(), torch_forward=None), *tokens, checks=("outputs",))


@pytest.mark.parametrize("name", ["vit", "gpt2"])
def test_infer_port_decides_each_zoo_table_whole_and_equal_to_the_hand_written_one(name, images, tokens):
    """HF's separate q/k/v/o Linears onto nnx.MultiHeadAttention (ViT), GPT-2's Conv1D as it is and its tied
    head (GPT-2): every row decided, none left out."""
    if name == "vit":
        inferred = infer_port(vit_torch.vit, lambda: vit_flax.ViT(nnx.Rngs(0)), images[0], torch_forward=vit.logits)
        hand = vit.weights()
    else:
        flax = lambda dtype: gpt2_flax.GPT2(nnx.Rngs(0), param_dtype=dtype)  # noqa: E731
        inferred = infer_port(gpt2_torch.gpt2, flax, tokens[0], torch_forward=gpt2.logits)
        hand = gpt2.weights()
    assert inferred.decided, inferred.code()
    assert not inferred.port.not_ported, inferred.code()
    assert table_of(inferred.port.weights) == table_of(hand)
    assert check_port(inferred, *(images if name == "vit" else tokens), checks=FORWARD).passed


def test_coverage_says_a_key_bias_cannot_affect_the_outputs_and_passes(images):
    """The softmax cancels a constant shift along each query's row: no input can catch a wrong key bias. Coverage
    says so for both layers' and passes; every other entry's planted bug is caught."""
    report = check_port(vit.make_port(), *images, checks=("outputs",), coverage=True)
    assert report.passed, report.table()
    rows = [row for row in report.rows if row.check == "coverage"]
    assert rows[0].case == "38 of 40 entries caught, a bug planted in each; 2 cannot affect the outputs"
    assert [row.case.split(" ->")[0] for row in rows[1:]] == [
        f"vit.layers.{layer}.attention.k_proj.bias" for layer in (0, 1)
    ]
    assert all(row.detail.startswith("cannot affect the outputs") for row in rows[1:])
