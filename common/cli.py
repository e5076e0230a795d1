"""Command-line flags for both trainers and evaluators, generated from the one `Config` definition."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import sys
import typing
from collections.abc import Iterator, Sequence
from typing import Any, Literal, NoReturn, Protocol

from common.config import DEFAULT_PRESET, FIELD_HELP, Config, RunOptions, field_type
from common.data import DATA_SOURCES
from common.errors import ConfigError, SeqMnistError
from common.presets import PRESETS, get_preset

DEVICES = ("auto", "cpu", "gpu", "cuda")
INIT_CHOICES = ("canonical", "native")


DEVICE_HELP = "auto: a GPU when there is one, else the CPU; gpu (or cuda) without one is an error"


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's `(default: ...)` after each option's help, once: not where the help already says its
    default in words (`(default: width / 8)`), nor `(default: None)` for an option that has none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if "(default" in (action.help or "") or action.default is None:
            return action.help
        return super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage block) and exits with code 2.

    Flags must be spelled out (`--hidden` is not taken for `--hidden-size`), and `--help` shows every
    option's default.
    """

    def __init__(self, **options: Any):
        options.setdefault("allow_abbrev", False)
        options.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(**options)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}{self._suggestion(message)} (see --help)\n")

    def _suggestion(self, message: str) -> str:
        """`; did you mean --hidden-size?` for a misspelled flag, as the port API suggests names."""
        if not message.startswith("unrecognized arguments:"):
            return ""
        flags = [option for action in self._actions for option in action.option_strings if option.startswith("--")]
        for word in message.split(":", 1)[1].split():
            if word.startswith("--"):
                close = difflib.get_close_matches(word.split("=", 1)[0], flags, n=1, cutoff=0.6)
                if close:
                    return f"; did you mean {close[0]}?"
        return ""


def preset_list(parser: argparse.ArgumentParser, text: str, flag: str = "--presets") -> list[str]:
    """`lstm,bilstm` -> the preset names; an unknown one is refused in one line (the same in every command)."""
    names = [name.strip() for name in text.split(",")]
    for name in names:
        if name not in PRESETS:
            parser.error(f"{flag}: unknown preset {name!r}; expected some of {', '.join(PRESETS)}")
    return names


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser, only: Sequence[str] | None = None) -> None:
    """One override flag per Config field (`--hidden-size 128`, `--bidirectional/--no-bidirectional`)."""
    group = parser.add_argument_group("recipe overrides (default: the preset's value)")
    for field in dataclasses.fields(Config):
        if only is not None and field.name not in only:
            continue
        kind = field_type(field)
        options: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS, "help": FIELD_HELP[field.name]}
        if typing.get_origin(kind) is Literal:
            options.update(choices=typing.get_args(kind), metavar="{" + ",".join(typing.get_args(kind)) + "}")
        elif kind is bool:
            options.update(action=argparse.BooleanOptionalAction)
        else:
            options.update(type=kind, metavar=field.name.upper())
        group.add_argument(flag_name(field.name), **options)


class FlagGroup(Protocol):
    """An argparse parser or argument group: anything flags can be added to."""

    def add_argument(self, *names: str, **options: Any) -> argparse.Action: ...


def add_data_flags(parser: FlagGroup) -> None:
    parser.add_argument("--data-dir", help="folder with the four IDX files (also torchvision's MNIST/raw layout)")
    parser.add_argument(
        "--data-source",
        choices=DATA_SOURCES,
        default="auto",
        help="auto: --data-dir, else the bundled copy; tfds / torchvision on request",
    )
    parser.add_argument("--device", choices=DEVICES, default="auto", help=DEVICE_HELP)


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def build_train_parser(prog: str, framework: str) -> OneLineParser:
    """The trainer's flags; `framework` ("torch" or "jax") tailors the help to that trainer."""
    library = {"torch": "PyTorch", "jax": "Flax NNX + optax"}[framework]
    parser = OneLineParser(prog=prog, description=f"Train a row-by-row MNIST recurrent classifier with {library}.")
    parser.add_argument("--preset", default=DEFAULT_PRESET, help=f"the recipe: one of {', '.join(PRESETS)}")
    add_config_flags(parser)
    run = parser.add_argument_group("run")
    run.add_argument("--max-steps", type=positive_int, help="stop after N training steps (smoke runs)")
    add_data_flags(run)
    run.add_argument("--out", help=f"output folder (when not given: runs/{framework}-<preset>-<time>)")
    run.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    run.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=0,
        metavar="N",
        help="also checkpoint every N steps (always at the end of each epoch)",
    )
    run.add_argument(
        "--init",
        choices=INIT_CHOICES,
        default="canonical",
        help=f"canonical: the shared NumPy initial weights for the seed; native: {library}'s own initialisers",
    )
    run.add_argument("--init-weights", metavar="FILE", help="start from this canonical weights file")
    logging = {"torch": "log every N steps", "jax": "log every N steps (also the steps per compiled chunk)"}
    run.add_argument("--log-every", type=positive_int, default=50, help=logging[framework])
    run.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    return parser


def resolve_config(namespace: argparse.Namespace, base: Config | None = None) -> Config:
    """The preset (or `base`) with every config flag the user gave applied on top."""
    config = base if base is not None else get_preset(namespace.preset)
    overrides = {
        field.name: getattr(namespace, field.name)
        for field in dataclasses.fields(Config)
        if hasattr(namespace, field.name)
    }
    return dataclasses.replace(config, **overrides)


def flag_message(error: ConfigError) -> str:
    """The error's message naming the flag (`--batch-size must be positive`) where it names a field."""
    message = str(error)
    if error.field and message.startswith(error.field):
        return flag_name(error.field) + message[len(error.field) :]
    return message


def parse_train_args(argv: Sequence[str] | None, prog: str, framework: str) -> tuple[Config, RunOptions]:
    """Parse the trainer's flags; a bad flag or value exits with code 2 and one line."""
    parser = build_train_parser(prog, framework)
    namespace = parser.parse_args(argv)
    try:
        config = resolve_config(namespace)
    except ConfigError as error:
        parser.error(flag_message(error))
    options = RunOptions(**{field.name: getattr(namespace, field.name) for field in dataclasses.fields(RunOptions)})
    if options.resume and options.overwrite:
        parser.error("--resume and --overwrite exclude each other")
    if options.resume and not options.out:
        parser.error("--resume needs --out DIR, the folder of the run to continue")
    return config, options


def build_evaluate_parser(prog: str, framework: str) -> OneLineParser:
    """The evaluator's flags; `framework` ("torch" or "jax") tailors the help to that evaluator."""
    weights_help = {
        "torch": "canonical .safetensors, or a tutorial's torch.save(state_dict) pickle with --preset",
        "jax": "canonical .safetensors (a tutorial's pickle: convert it first with python -m torch_impl.convert)",
    }[framework]
    parser = OneLineParser(prog=prog, description="Evaluate a weights file on the test set.")
    parser.add_argument("--weights", required=True, metavar="FILE", help=weights_help)
    parser.add_argument("--preset", help="the model a file without config metadata holds (tutorial checkpoints)")
    add_config_flags(parser, only=("dataset", "dtype"))
    add_data_flags(parser)
    parser.add_argument("--limit", type=positive_int, help="evaluate only the first N test images")
    parser.add_argument("--json", action="store_true", help="print one JSON object (with every prediction)")
    return parser


def fail(prog: str, message: str, code: int = 1) -> NoReturn:
    """Print `prog: error: message` on stderr (one line) and exit."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(code)


@contextlib.contextmanager
def cli_errors(prog: str) -> Iterator[None]:
    """Turn the project's errors into one line on stderr: a bad flag value exits 2, any other error 1."""
    try:
        yield
    except ConfigError as error:
        fail(prog, flag_message(error), code=2)
    except SeqMnistError as error:
        fail(prog, str(error))
