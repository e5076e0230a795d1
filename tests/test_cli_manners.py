"""Every command's flags mean exactly what they say: no abbreviations, errors name the flag, every option
has help and shows its default, --device takes the same choices everywhere, each framework's help is its own."""

from __future__ import annotations

import argparse

import pytest

import bench.__main__ as bench_main
import parity.__main__ as parity_main
from common.cli import DEVICES, DefaultsHelpFormatter, build_evaluate_parser, build_train_parser
from common.runplot import build_plot_parser
from examples.transformer.port import build_parser as transformer_parser
from jax_impl.train import main as jax_train
from parity import accuracy
from tests.conftest import assert_one_line, run_main
from torch_impl import convert
from torch_impl.evaluate import main as torch_evaluate
from torch_impl.plot import main as torch_plot
from torch_impl.train import main as torch_train

PARSERS = {
    "examples.transformer.port": transformer_parser,
    "torch_impl.train": lambda: build_train_parser("python -m torch_impl.train", "torch"),
    "jax_impl.train": lambda: build_train_parser("python -m jax_impl.train", "jax"),
    "torch_impl.evaluate": lambda: build_evaluate_parser("python -m torch_impl.evaluate", "torch"),
    "jax_impl.evaluate": lambda: build_evaluate_parser("python -m jax_impl.evaluate", "jax"),
    "torch_impl.plot": lambda: build_plot_parser("torch"),
    "jax_impl.plot": lambda: build_plot_parser("jax"),
    "torch_impl.convert": convert.build_parser,
    "parity": parity_main.build_parser,
    "parity.accuracy": accuracy.build_parser,
    "bench": bench_main.build_parser,
}

ABBREVIATED = [  # a prefix of a real flag, which argparse would take by default
    (torch_train, ["--hidden", "64", "--print-config"]),
    (jax_train, ["--hidden", "64", "--print-config"]),
    (torch_evaluate, ["--weights", "model.safetensors", "--lim", "3"]),
    (torch_plot, ["runs/x", "--dig", "3"]),
    (convert.main, ["rnn.pkl", "--pres", "lstm", "--out", "x.safetensors"]),
    (parity_main.main, ["--preset", "lstm"]),
    (accuracy.main, ["--preset", "lstm"]),
    (bench_main.main, ["--preset", "lstm"]),
]


@pytest.mark.parametrize("main, argv", ABBREVIATED, ids=lambda value: getattr(value, "__module__", None) or "")
def test_every_command_refuses_an_abbreviated_flag(main, argv, capsys):
    code, _, err = run_main(main, argv, capsys)
    abbreviated = next(arg for arg in argv if arg.startswith("--") and arg != "--print-config" and arg != "--weights")
    # argparse names the unknown prefix, or, where it stood for a required flag, that flag as missing
    assert_one_line(code, err, 2)
    assert f"unrecognized arguments: {abbreviated}" in err or "arguments are required: --preset" in err, err


@pytest.mark.parametrize("main", [torch_train, jax_train], ids=["torch", "jax"])
def test_a_bad_value_is_reported_under_the_flag_the_user_typed(main, capsys):
    code, _, err = run_main(main, ["--batch-size", "0", "--print-config"], capsys)
    assert_one_line(code, err, 2, "--batch-size must be positive, got 0")
    code, _, err = run_main(main, ["--eval-images", "-1", "--print-config"], capsys)
    assert_one_line(code, err, 2, "--eval-images must be zero or positive, got -1")


@pytest.mark.parametrize("name", PARSERS)
def test_every_option_has_help_and_the_help_shows_its_default(name):
    parser = PARSERS[name]()
    assert parser.formatter_class is DefaultsHelpFormatter
    assert not parser.allow_abbrev
    missing = [action.dest for action in parser._actions if not action.help]
    assert not missing, f"{name}: options without help: {missing}"
    text = parser.format_help()
    for action in parser._actions:
        shown = action.option_strings and action.default not in (None, False, argparse.SUPPRESS)
        if shown and action.dest != "help" and "(default" not in action.help:
            assert f"(default: {action.default})" in " ".join(text.split()), (name, action.dest)
    # a default said once: in the help's own words or argparse's, never both, and never "None"
    formatter = parser._get_formatter()
    helps = {action.dest: formatter._get_help_string(action) or "" for action in parser._actions}
    assert not [dest for dest, help in helps.items() if help.count("(default:") > 1 or "(default: None)" in help]


def test_device_takes_the_same_choices_in_every_command_that_has_it():
    choices = {
        name: tuple(action.choices)
        for name, build in PARSERS.items()
        for action in build()._actions
        if "--device" in action.option_strings
    }
    assert set(choices) >= {"torch_impl.train", "jax_impl.evaluate", "parity", "parity.accuracy", "bench"}
    assert set(choices.values()) == {DEVICES}


def test_each_frameworks_help_describes_that_framework():
    torch_help, jax_help = PARSERS["torch_impl.train"]().format_help(), PARSERS["jax_impl.train"]().format_help()
    assert "compiled" not in torch_help and "compiled chunk" in jax_help
    assert "runs/torch-<preset>" in torch_help and "runs/jax-<preset>" in jax_help
    torch_eval, jax_eval = PARSERS["torch_impl.evaluate"]().format_help(), PARSERS["jax_impl.evaluate"]().format_help()
    assert "pickle with --preset" in " ".join(torch_eval.split())
    assert "convert it first" in " ".join(jax_eval.split()) and "pickle with --preset" not in " ".join(jax_eval.split())


@pytest.mark.parametrize("main", [torch_train, parity_main.main, bench_main.main], ids=["train", "parity", "bench"])
def test_a_misspelled_flag_gets_the_closest_one_suggested(main, capsys):
    code, _, err = run_main(main, ["--presetz", "lstm"] if main is not torch_train else ["--hiden-size", "8"], capsys)
    suggestion = "did you mean --presets?" if main is not torch_train else "did you mean --hidden-size?"
    assert_one_line(code, err, 2, "unrecognized arguments", suggestion)


@pytest.mark.parametrize("main", [parity_main.main, bench_main.main, accuracy.main], ids=["parity", "bench", "acc"])
def test_an_unknown_preset_is_worded_the_same_by_every_command(main, capsys):
    code, _, err = run_main(main, ["--presets", "lstm,nope"], capsys)
    assert_one_line(code, err, 2, "--presets: unknown preset 'nope'; expected some of lstm, bilstm")
