"""PyTorch model <-> canonical weights, and the classic tutorials' own checkpoints -> canonical.

The canonical format *is* this model's `state_dict` (same names, shapes and gate order: LSTM i,f,g,o;
GRU r,z,n), so the mapping is the identity plus checks. Tutorial checkpoints differ only in names.

    python -m torch_impl.convert rnn.pkl --preset lstm --out lstm.safetensors
"""

from __future__ import annotations

import pickle
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from common.checkpoint import read_model_weights
from common.cli import OneLineParser, cli_errors
from common.config import Config
from common.errors import ConfigError, SeqMnistError
from common.outputs import claim_output_file, entry_point
from common.presets import PRESETS, get_preset
from common.weights import Weights, check_weights, save_weights
from torch_impl.model import DTYPES, SequenceClassifier, build_model

# Attribute names the classic tutorials give their two modules (first component of a state_dict key).
TUTORIAL_RECURRENT_NAMES = ("rnn", "lstm", "birnn", "basic_rnn")
TUTORIAL_HEAD_NAMES = ("out", "fc", "FC")


def to_canonical(model: SequenceClassifier) -> Weights:
    """The model's parameters as canonical NumPy arrays (a copy, in the model's dtype)."""
    return {name: tensor.detach().cpu().numpy().copy() for name, tensor in model.state_dict().items()}


def from_canonical(weights: Weights, config: Config, device: str | torch.device = "cpu") -> SequenceClassifier:
    """A model holding exactly `weights` (checked name by name against the config first)."""
    check_weights(weights, config, "canonical weights")
    model = build_model(config)
    state = {name: torch.from_numpy(np.array(array, copy=True)) for name, array in weights.items()}
    model.load_state_dict(state, strict=True)
    return model.to(device)


def read_tutorial_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A `torch.save(model.state_dict())` file, read with `weights_only=True`: nothing in it is executed."""
    path = Path(path)
    if not path.is_file():
        raise SeqMnistError(f"{path}: checkpoint not found")
    with path.open("rb") as stream:
        head = stream.read(2)
    # torch.save writes a zip archive (PK..); older versions a pickle (PROTO opcode 0x80, protocol 2-5)
    if not (head == b"PK" or (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5)):
        raise SeqMnistError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr; our errors are one line
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        culprit = re.search(r"(?:Unsupported global|Unsupported operand)[^.\n]*", str(error))
        if culprit is None:  # a damaged pickle, not a dangerous one
            raise SeqMnistError(f"{path}: not a readable PyTorch checkpoint (a damaged pickle)") from None
        raise SeqMnistError(
            f"{path}: refused: not a plain tensor pickle; loading it could run code, "
            f"and weights_only=True says ({culprit.group(0)})"
        ) from None
    except Exception as error:  # torch raises RuntimeError / EOFError / zip errors for non-checkpoints
        raise SeqMnistError(f"{path}: not a PyTorch checkpoint ({str(error).strip().splitlines()[0][:160]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise SeqMnistError(f"{path}: expected a state_dict (a dict of tensors), got {type(state).__name__}")
    return state


def canonical_name(tutorial_name: str, source: str) -> str:
    """`lstm.weight_ih_l0` -> `rnn.weight_ih_l0`, `fc.bias` -> `out.bias` (a `module.` prefix is dropped)."""
    name = tutorial_name.removeprefix("module.")
    module, _, rest = name.partition(".")
    if module in TUTORIAL_RECURRENT_NAMES:
        return f"rnn.{rest}"
    if module in TUTORIAL_HEAD_NAMES:
        return f"out.{rest}"
    raise SeqMnistError(
        f"{source}: unexpected tensor {tutorial_name} (recurrent layer must be one of "
        f"{', '.join(TUTORIAL_RECURRENT_NAMES)}; head one of {', '.join(TUTORIAL_HEAD_NAMES)})"
    )


def tutorial_to_canonical(state: dict[str, torch.Tensor], config: Config, source: str) -> Weights:
    """Rename a tutorial state_dict to canonical names and check it against the preset's shapes.

    A time-major `nn.RNN` (no batch_first) has the same weights, so nothing else changes.
    """
    weights: Weights = {}
    for name, tensor in state.items():
        key = canonical_name(name, source)
        if key in weights:
            raise SeqMnistError(f"{source}: two tensors map to {key}")
        if not tensor.is_floating_point():
            raise SeqMnistError(f"{source}: tensor {name} has dtype {tensor.dtype}, expected floating point")
        weights[key] = tensor.detach().to(DTYPES[config.dtype]).numpy().copy()
    check_weights(weights, config, source)
    return weights


def read_weights(path: str, preset: Config | None) -> tuple[Weights, Config]:
    """Canonical .safetensors (config from its metadata) or a tutorial pickle (config from `preset`)."""
    if Path(path).suffix in (".pkl", ".pt", ".pth", ".bin"):
        if preset is None:
            raise ConfigError(f"{path}: a tutorial checkpoint carries no config; pass --preset NAME")
        return tutorial_to_canonical(read_tutorial_checkpoint(path), preset, path), preset
    return read_model_weights(path, preset)


PROG = "python -m torch_impl.convert"


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description="Convert a tutorial's state_dict pickle to canonical safetensors.")
    parser.add_argument("source", help="the tutorial's torch.save(model.state_dict()) file")
    parser.add_argument("--preset", required=True, help=f"the model it holds: one of {', '.join(PRESETS)}")
    parser.add_argument("--out", required=True, help="the .safetensors file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    namespace = build_parser().parse_args(argv)
    with cli_errors(PROG):
        out = claim_output_file(namespace.out, "--out", overwrite=namespace.overwrite)
        config = get_preset(namespace.preset)
        weights = tutorial_to_canonical(read_tutorial_checkpoint(namespace.source), config, namespace.source)
        save_weights(out, weights, config)
    print(f"{len(weights)} tensors, preset {namespace.preset}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(entry_point(main))
