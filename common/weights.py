"""The canonical weight format: a flat dict of NumPy arrays named and laid out like PyTorch's `state_dict`.

For the model `SequenceClassifier(rnn=nn.LSTM/RNN/GRU(batch_first=True), out=nn.Linear)`:

    rnn.weight_ih_l{k}[_reverse]  <dtype>[gates * hidden, layer_input]   gates: rnn 1, lstm 4 (i,f,g,o), gru 3 (r,z,n)
    rnn.weight_hh_l{k}[_reverse]  <dtype>[gates * hidden, hidden]
    rnn.bias_ih_l{k}[_reverse]    <dtype>[gates * hidden]
    rnn.bias_hh_l{k}[_reverse]    <dtype>[gates * hidden]
    out.weight                    <dtype>[num_classes, directions * hidden]
    out.bias                      <dtype>[num_classes]

`layer_input` is 28 for layer 0 and `directions * hidden` above. Files are safetensors with the resolved
config as JSON in the metadata, so that a weights file alone rebuilds the model.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save

from common.config import Config
from common.errors import SeqMnistError
from common.outputs import write_atomically

CONFIG_METADATA_KEY = "config"  # the only metadata key: safetensors orders several keys differently from run to run

Weights = dict[str, np.ndarray]


def layer_suffixes(config: Config) -> list[str]:
    """`l0`, `l0_reverse`, `l1`, ...: PyTorch's per-layer, per-direction parameter suffixes, in order."""
    directions = ["", "_reverse"][: config.num_directions]
    return [f"l{layer}{direction}" for layer in range(config.num_layers) for direction in directions]


def layer_input_size(config: Config, layer: int) -> int:
    return config.input_size if layer == 0 else config.num_directions * config.hidden_size


def canonical_shapes(config: Config) -> dict[str, tuple[int, ...]]:
    """Every canonical tensor name with its shape, in `state_dict` order."""
    rows = config.gates * config.hidden_size
    shapes: dict[str, tuple[int, ...]] = {}
    for suffix in layer_suffixes(config):
        layer = int(suffix[1:].split("_")[0])
        shapes[f"rnn.weight_ih_{suffix}"] = (rows, layer_input_size(config, layer))
        shapes[f"rnn.weight_hh_{suffix}"] = (rows, config.hidden_size)
        shapes[f"rnn.bias_ih_{suffix}"] = (rows,)
        shapes[f"rnn.bias_hh_{suffix}"] = (rows,)
    shapes["out.weight"] = (config.num_classes, config.num_directions * config.hidden_size)
    shapes["out.bias"] = (config.num_classes,)
    return shapes


def initial_weights(config: Config, seed: int | None = None) -> Weights:
    """Weights drawn with NumPy from PyTorch's default distributions, identical in every framework.

    Recurrent tensors ~ U(-1/sqrt(H), 1/sqrt(H)) (nn.RNN/LSTM/GRU's reset_parameters); the head's weight
    and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (nn.Linear's kaiming_uniform(a=sqrt(5)) bound). With
    `recurrent_init="identity"` every H x H gate block of `weight_hh` is the identity.
    """
    rng = np.random.default_rng(config.seed if seed is None else seed)
    weights: Weights = {}
    recurrent_bound = 1.0 / math.sqrt(config.hidden_size)
    head_bound = 1.0 / math.sqrt(config.num_directions * config.hidden_size)
    for name, shape in canonical_shapes(config).items():
        bound = head_bound if name.startswith("out.") else recurrent_bound
        values = rng.uniform(-bound, bound, size=shape)
        if config.recurrent_init == "identity" and ".weight_hh_" in name:
            values = np.tile(np.eye(config.hidden_size), (config.gates, 1))
        weights[name] = values.astype(config.dtype)
    return weights


def check_weights(weights: Weights, config: Config, source: str) -> None:
    """Every canonical name present with its shape and the config's float dtype, all values finite."""
    expected = canonical_shapes(config)
    missing = [name for name in expected if name not in weights]
    if missing:
        raise SeqMnistError(
            f"{source}: missing tensor {missing[0]} (and {len(missing) - 1} more)"
            if len(missing) > 1
            else f"{source}: missing tensor {missing[0]}"
        )
    unexpected = sorted(set(weights) - set(expected))
    if unexpected:
        raise SeqMnistError(f"{source}: unexpected tensor {unexpected[0]} for a {describe(config)}")
    for name, shape in expected.items():
        array = weights[name]
        if tuple(array.shape) != shape:
            raise SeqMnistError(
                f"{source}: tensor {name} has shape {tuple(array.shape)}, expected {shape} for a {describe(config)}"
            )
        if array.dtype != np.dtype(config.dtype):
            raise SeqMnistError(f"{source}: tensor {name} has dtype {array.dtype}, expected {config.dtype}")
        if not np.isfinite(array).all():
            raise SeqMnistError(f"{source}: tensor {name} holds NaN or inf values")


def describe(config: Config) -> str:
    """`2-layer bidirectional lstm, hidden 128` — for error messages."""
    direction = "bidirectional " if config.bidirectional else ""
    return f"{config.num_layers}-layer {direction}{config.cell}, hidden {config.hidden_size}"


def save_weights(path: str | Path, weights: Weights, config: Config) -> None:
    """Write canonical weights + config atomically; the same weights and config give the same bytes."""
    check_weights(weights, config, str(path))
    metadata = {CONFIG_METADATA_KEY: config.to_json()}
    payload = save({name: np.ascontiguousarray(weights[name]) for name in canonical_shapes(config)}, metadata)
    write_atomically(Path(path), payload)


def read_safetensors(path: str | Path) -> tuple[Weights, dict[str, str]]:
    """Tensors and metadata of a safetensors file, or a one-line error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise SeqMnistError(f"{path}: weights file not found")
    payload = path.read_bytes()
    try:
        weights = load(payload)
        metadata = _safetensors_metadata(payload)
    except (SafetensorError, ValueError, TypeError, OverflowError) as error:
        raise SeqMnistError(f"{path}: not a safetensors weights file ({_first_line(error)})") from None
    return weights, metadata


def _safetensors_metadata(payload: bytes) -> dict[str, str]:
    import json

    header_size = int.from_bytes(payload[:8], "little")
    header = json.loads(payload[8 : 8 + header_size])
    return dict(header.get("__metadata__") or {})


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_weights(path: str | Path, config: Config | None = None) -> tuple[Weights, Config]:
    """Read a canonical weights file: its tensors, checked against its config (or `config`, if given)."""
    weights, metadata = read_safetensors(path)
    stored = None
    if CONFIG_METADATA_KEY in metadata:
        stored = Config.from_json(metadata[CONFIG_METADATA_KEY], source=str(path))
    if config is None:
        if stored is None:
            raise SeqMnistError(f"{path}: no config in its metadata; pass --preset to say which model it holds")
        config = stored
    elif stored is not None:
        check_same_model(stored, config, str(path))
    check_weights(weights, config, str(path))
    return weights, config


MODEL_FIELDS = ("cell", "input_size", "hidden_size", "num_layers", "bidirectional", "num_classes", "dtype")


def check_same_model(stored: Config, wanted: Config, source: str) -> None:
    for field in MODEL_FIELDS:
        if getattr(stored, field) != getattr(wanted, field):
            raise SeqMnistError(
                f"{source}: holds {field}={getattr(stored, field)!r} but the flags ask for {getattr(wanted, field)!r}"
            )
