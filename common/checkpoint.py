"""Training checkpoints: canonical weights + Adam state + position, one safetensors file each, written atomically.

Layout of `OUT/checkpoints/step-00000500.safetensors`:

    model.<canonical name>        the weights (the canonical format, e.g. model.rnn.weight_ih_l0)
    adam.exp_avg.<canonical name> Adam's first moment, in the same layout as the weight
    adam.exp_avg_sq.<...>         Adam's second moment
    adam.step                     int64 [1]: Adam steps taken (its bias correction depends on it)

with the config and the global step in the metadata. The sampler's position is the step itself (its
batches are a pure function of seed, epoch and step) and training draws no other random numbers, so
this is the whole state of a run: resuming from it continues the run bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save

from common.config import Config
from common.errors import SeqMnistError
from common.outputs import write_atomically
from common.weights import Weights, check_same_model, check_weights, load_weights, read_safetensors

CHECKPOINT_DIR = "checkpoints"
NAME_PATTERN = re.compile(r"^step-(\d{8})\.safetensors$")
KEEP = 2
CHECKPOINT_KEY = "checkpoint"  # the safetensors metadata entry that makes a file a checkpoint


@dataclasses.dataclass
class Checkpoint:
    step: int
    weights: Weights
    optimizer: dict[str, np.ndarray]  # adam.exp_avg.<name>, adam.exp_avg_sq.<name>, adam.step
    config: Config


def checkpoint_paths(out: Path) -> list[Path]:
    """Finished checkpoint files of a run, oldest first (temporary files of a killed write are ignored)."""
    folder = Path(out) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    steps = {path: match.group(1) for path in folder.iterdir() if (match := NAME_PATTERN.match(path.name))}
    return sorted(steps, key=lambda path: int(steps[path]))


def save_checkpoint(out: Path, checkpoint: Checkpoint) -> Path:
    """Write one checkpoint atomically (temporary file, fsync, rename), then keep only the newest two."""
    check_weights(checkpoint.weights, checkpoint.config, "checkpoint")
    tensors = {f"model.{name}": np.ascontiguousarray(array) for name, array in checkpoint.weights.items()}
    tensors.update({name: np.ascontiguousarray(array) for name, array in checkpoint.optimizer.items()})
    metadata = {CHECKPOINT_KEY: json.dumps({"step": checkpoint.step, "config": checkpoint.config.to_dict()})}
    path = Path(out) / CHECKPOINT_DIR / f"step-{checkpoint.step:08d}.safetensors"
    write_atomically(path, save(tensors, metadata))
    for old in checkpoint_paths(out)[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> Checkpoint:
    """Read one checkpoint, checking its tensors against its own config."""
    try:
        payload = path.read_bytes()
        tensors = load(payload)
        header = json.loads(payload[8 : 8 + int.from_bytes(payload[:8], "little")])
        info = json.loads(header["__metadata__"][CHECKPOINT_KEY])
    except (OSError, SafetensorError, ValueError, KeyError, TypeError) as error:
        raise SeqMnistError(f"{path}: not a readable checkpoint ({type(error).__name__})") from None
    config = Config.from_dict(info["config"], str(path))
    weights = {name[len("model.") :]: array for name, array in tensors.items() if name.startswith("model.")}
    check_weights(weights, config, str(path))
    optimizer = {name: array for name, array in tensors.items() if name.startswith("adam.")}
    if "adam.step" not in optimizer:
        raise SeqMnistError(f"{path}: checkpoint has no optimizer state")
    return Checkpoint(int(info["step"]), weights, optimizer, config)


def read_model_weights(path: str | Path, preset: Config | None = None) -> tuple[Weights, Config]:
    """Canonical weights and their config from what a user has: a weights file, a training checkpoint, or a
    run folder (its model.safetensors). `preset` says which model a file without a config holds."""
    path = Path(path)
    if path.is_dir():
        if (path / "model.safetensors").is_file():
            path = path / "model.safetensors"
        elif kept := checkpoint_paths(path):
            raise SeqMnistError(
                f"{path}: a run folder without model.safetensors (unfinished?); "
                f"evaluate its newest checkpoint instead: {kept[-1]}"
            )
        else:
            raise SeqMnistError(f"{path}: a folder, and not a run folder (no model.safetensors in it)")
    _, metadata = read_safetensors(path)
    if CHECKPOINT_KEY not in metadata:
        return load_weights(path, preset)
    checkpoint = load_checkpoint(path)
    if preset is not None:
        check_same_model(checkpoint.config, preset, str(path))
    return checkpoint.weights, checkpoint.config


def latest_readable_checkpoint(out: Path) -> tuple[Checkpoint | None, list[str]]:
    """The newest checkpoint that reads back whole, and a note for each newer one that did not.

    An unreadable one (a crash mid-write where rename is not atomic, a full disk) is renamed to
    `step-NNNNNNNN.safetensors.unreadable`: kept for a look, out of the way of the run's next checkpoints.
    """
    notes: list[str] = []
    for path in reversed(checkpoint_paths(out)):
        try:
            return load_checkpoint(path), notes
        except SeqMnistError as error:
            aside = path.with_name(path.name + ".unreadable")
            path.rename(aside)
            notes.append(
                f"{path.name} is unreadable ({str(error).removeprefix(f'{path}: ')}); set aside as {aside.name}"
            )
    return None, notes
