"""How each model is called (`Port(torch_forward=..., flax_forward=...)`): models as their authors wrote them,
one returning an output object to take `.logits` from, the other needing a keyword-only argument, checked,
inferred and saved as a reference with no wrapper around either (issue 34, cases 1, 2 and 6)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from flax import nnx
from torch import nn

from parity import Port, PortError, check_port, check_reference, infer_port, save_reference, transpose

RNG = np.random.default_rng(0)
ROWS = RNG.random((8, 28, 28), dtype=np.float32)
LABELS = np.arange(8) % 10


@dataclasses.dataclass
class ClassifierOutput:  # as Hugging Face models return (`output.logits`), and not an array
    logits: torch.Tensor
    hidden: torch.Tensor


class TorchClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(28 * 28, 32)
        self.head = nn.Linear(32, 10)

    def forward(self, rows: torch.Tensor) -> ClassifierOutput:
        hidden = torch.tanh(self.body(rows.flatten(1)))
        return ClassifierOutput(self.head(hidden), hidden)


class FlaxClassifier(nnx.Module):
    def __init__(self):
        self.body = nnx.Linear(28 * 28, 32, rngs=nnx.Rngs(0))
        self.head = nnx.Linear(32, 10, rngs=nnx.Rngs(1))

    def __call__(self, rows, *, rngs):  # a keyword the model requires, as a published port's may
        return self.head(nnx.tanh(self.body(rows.reshape(rows.shape[0], -1))))


WEIGHTS = [
    ("body.weight", "body.kernel", transpose()),
    ("body.bias", "body.bias"),
    ("head.weight", "head.kernel", transpose()),
    ("head.bias", "head.bias"),
]
FORWARDS = {
    "torch_forward": lambda model, rows: model(rows).logits,
    "flax_forward": lambda model, rows: model(rows, rngs=None),
}


def test_without_forwards_the_models_as_written_are_refused_in_one_line():
    port = Port("as written", TorchClassifier, FlaxClassifier, WEIGHTS)
    with pytest.raises(PortError) as refused:
        check_port(port, ROWS, LABELS, checks=("outputs",))
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and "ClassifierOutput" in message and "torch_forward" in message
    # the torch side taken as it should be: the Flax model's required keyword is what is said next
    with pytest.raises(PortError, match="rngs") as refused:
        check_port(dataclasses.replace(port, torch_forward=FORWARDS["torch_forward"]), ROWS, LABELS)
    assert len(str(refused.value).splitlines()) == 1


def test_the_declared_forwards_make_every_check_pass_and_a_wrong_one_fails():
    port = Port("called", TorchClassifier, FlaxClassifier, WEIGHTS, **FORWARDS)
    report = check_port(port, ROWS, LABELS)
    assert report.passed, report.table()
    assert {row.check for row in report.rows} >= {"outputs", "gradients", "trajectory"}
    # the leaf the torch side takes is what the check compares: the hidden layer is not the logits
    wrong = dataclasses.replace(port, torch_forward=lambda model, rows: model(rows).hidden[:, :10])
    assert not check_port(wrong, ROWS, LABELS, checks=("outputs",)).passed


def test_infer_port_takes_the_forwards_and_its_port_carries_them_to_check_port():
    inferred = infer_port(TorchClassifier, FlaxClassifier, ROWS, **FORWARDS)
    assert inferred.decided, inferred.undecided
    assert inferred.port.torch_forward is FORWARDS["torch_forward"]
    assert check_port(inferred, ROWS, LABELS, checks=("weights", "outputs", "gradients")).passed


def test_a_reference_saved_through_the_forwards_is_checked_through_the_flax_one(tmp_path):
    port = Port("called", TorchClassifier, FlaxClassifier, WEIGHTS, **FORWARDS)
    save_reference(port, ROWS, tmp_path / "ref.safetensors", LABELS)
    assert check_reference(tmp_path / "ref.safetensors", FlaxClassifier, port).passed
    bare = check_reference(tmp_path / "ref.safetensors", FlaxClassifier, WEIGHTS, flax_forward=FORWARDS["flax_forward"])
    assert bare.passed


class TorchTokens(nn.Module):  # a language model's shape: token ids in, next-token logits at every position
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(12, 8)
        self.head = nn.Linear(8, 12)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.embed(tokens)))


class FlaxTokens(nnx.Module):
    def __init__(self, dtype: str = "float32"):  # nnx.Embed computes in its param_dtype: the run's, given
        self.embed = nnx.Embed(12, 8, param_dtype=np.dtype(dtype), rngs=nnx.Rngs(0))
        self.head = nnx.Linear(8, 12, rngs=nnx.Rngs(1))

    def __call__(self, tokens):
        return self.head(nnx.tanh(self.embed(tokens)))


TOKEN_WEIGHTS = [
    ("embed.weight", "embed.embedding"),
    ("head.weight", "head.kernel", transpose()),
    ("head.bias", "head.bias"),
]


def test_a_language_models_labels_at_every_position_are_its_next_tokens():
    tokens = RNG.integers(0, 12, (8, 6))
    port = Port("tokens", TorchTokens, FlaxTokens, TOKEN_WEIGHTS)
    report = check_port(port, tokens, np.roll(tokens, -1, axis=1))  # [rows, tokens] labels
    assert report.passed, report.table()
    with pytest.raises(PortError, match=r"labels: shape \(8,\) for outputs \(8, 6, 12\)"):
        check_port(port, tokens, tokens[:, 0])
