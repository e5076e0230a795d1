"""The one run configuration shared by both trainers: model shape, recipe, data and evaluation."""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from typing import Any, Literal

from common.errors import ConfigError

Cell = Literal["rnn", "lstm", "gru"]
RecurrentInit = Literal["default", "identity"]
DatasetName = Literal["mnist", "fashion_mnist"]
DType = Literal["float32", "float64"]

GATES_PER_CELL = {"rnn": 1, "lstm": 4, "gru": 3}
FIELD_HELP = {  # what each field means, for the flags' --help
    "cell": "the recurrent cell (rnn: tanh RNN)",
    "input_size": "pixels per time step (one 28-pixel image row)",
    "hidden_size": "units per layer and direction",
    "num_layers": "stacked recurrent layers",
    "bidirectional": "also read each image bottom-up (PyTorch's bidirectional=True)",
    "num_classes": "outputs of the linear head",
    "recurrent_init": "identity: every gate block of weight_hh starts as I (the 3x150 tanh-RNN tutorial)",
    "learning_rate": "Adam's learning rate",
    "batch_size": "training images per step",
    "epochs": "passes over the training set",
    "seed": "initial weights and batch order",
    "dataset": "MNIST or Fashion-MNIST",
    "dtype": "parameters and arithmetic",
    "eval_every_steps": "also evaluate every N steps (0: at the end of each epoch only)",
    "eval_images": "test images those evaluations use (0: all)",
}


@dataclasses.dataclass(frozen=True)
class Config:
    """A complete, validated recipe: building the model and training it needs nothing else."""

    cell: Cell = "lstm"  # rnn = tanh RNN, as nn.RNN's default nonlinearity
    input_size: int = 28  # pixels per row: one row of the image is one time step
    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = False
    num_classes: int = 10
    recurrent_init: RecurrentInit = "default"  # identity: weight_hh = I, the 3x150 tanh-RNN tutorial
    learning_rate: float = 0.01
    batch_size: int = 64
    epochs: int = 1
    seed: int = 0
    dataset: DatasetName = "mnist"
    dtype: DType = "float32"
    eval_every_steps: int = 0  # also evaluate every N training steps; 0 = only at the end of an epoch
    eval_images: int = 0  # how many test images those periodic evaluations use; 0 = all of them

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _check_field(field, getattr(self, field.name))
        if self.input_size != 28:
            raise ConfigError(f"input_size must be 28 (one 28-pixel image row per step), got {self.input_size}")

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def gates(self) -> int:
        """Rows per unit in PyTorch's stacked gate matrices: 1 (rnn), 4 (lstm: i,f,g,o), 3 (gru: r,z,n)."""
        return GATES_PER_CELL[self.cell]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> Config:
        """Build a Config from a dict (e.g. weights-file metadata), refusing unknown keys."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown config field(s) {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str, source: str = "config") -> Config:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{source}: config is not valid JSON ({error.msg})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: config must be a JSON object, got {type(values).__name__}")
        return cls.from_dict(values, source)


POSITIVE_INT_FIELDS = {"input_size", "hidden_size", "num_layers", "num_classes", "batch_size", "epochs"}
NON_NEGATIVE_INT_FIELDS = {"seed", "eval_every_steps", "eval_images"}


def field_type(field: dataclasses.Field[Any]) -> Any:
    """The resolved annotation of a Config field (annotations are strings under `from __future__`)."""
    return typing.get_type_hints(Config)[field.name]


def _check_field(field: dataclasses.Field[Any], value: Any) -> None:
    """Raise ConfigError unless `value` has the field's type and range."""
    name, kind = field.name, field_type(field)
    if typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            raise ConfigError(field=name, message=f"{name} must be one of {', '.join(choices)}, got {value!r}")
    elif kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(field=name, message=f"{name} must be true or false, got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(field=name, message=f"{name} must be an integer, got {value!r}")
        if name in POSITIVE_INT_FIELDS and value <= 0:
            raise ConfigError(field=name, message=f"{name} must be positive, got {value}")
        if name in NON_NEGATIVE_INT_FIELDS and value < 0:
            raise ConfigError(field=name, message=f"{name} must be zero or positive, got {value}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(field=name, message=f"{name} must be a number, got {value!r}")
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(field=name, message=f"{name} must be a positive finite number, got {value}")


DEFAULT_PRESET = "lstm"


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How to run a recipe (not part of it): where, on what data, for how long, writing where."""

    preset: str = DEFAULT_PRESET
    max_steps: int | None = None
    device: str = "auto"
    data_dir: str | None = None
    data_source: str = "auto"
    out: str | None = None
    overwrite: bool = False
    resume: bool = False
    checkpoint_every: int = 0
    init: str = "canonical"
    init_weights: str | None = None
    log_every: int = 50
    print_config: bool = False
