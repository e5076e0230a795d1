"""Config, presets and the trainers' generated flags."""

from __future__ import annotations

import dataclasses
import json

import pytest

from common.config import Config
from common.errors import ConfigError
from common.presets import PRESETS, get_preset
from jax_impl.train import main as jax_main
from tests.conftest import assert_one_line, assert_one_line_error, run_cli, run_main, run_module
from torch_impl.train import main as torch_main

# The tutorials' recipes (DEVELOPERS.md table): cell, hidden, layers, bidirectional, lr, batch, epochs, recurrent init.
TUTORIAL_RECIPES = {
    "lstm": ("lstm", 64, 1, False, 0.01, 64, 1, "default"),
    "bilstm": ("lstm", 64, 1, True, 0.01, 64, 1, "default"),
    "rnn": ("rnn", 150, 3, False, 0.001, 128, 10, "identity"),
    "lstm2": ("lstm", 64, 2, False, 0.01, 64, 1, "default"),
    "lstm2x128": ("lstm", 128, 2, False, 0.01, 100, 2, "default"),
    "bilstm2x128": ("lstm", 128, 2, True, 0.003, 100, 2, "default"),
}
RECIPE_FIELDS = (
    "cell",
    "hidden_size",
    "num_layers",
    "bidirectional",
    "learning_rate",
    "batch_size",
    "epochs",
    "recurrent_init",
)


@pytest.mark.parametrize("name", TUTORIAL_RECIPES)
def test_preset_matches_its_tutorial(name):
    preset = get_preset(name)
    assert tuple(getattr(preset, field) for field in RECIPE_FIELDS) == TUTORIAL_RECIPES[name]
    assert (preset.input_size, preset.num_classes, preset.dataset, preset.dtype) == (28, 10, "mnist", "float32")


def test_only_lstm2_evaluates_on_the_first_2000_images_every_50_steps():
    periodic = {
        name: (preset.eval_every_steps, preset.eval_images)
        for name, preset in PRESETS.items()
        if preset.eval_every_steps
    }
    assert periodic == {"lstm2": (50, 2000)}


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_preset("lstm").hidden_size = 3


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("learning_rate", -0.1, "learning_rate must be a positive finite number, got -0.1"),
        ("batch_size", 0, "batch_size must be positive, got 0"),
        ("cell", "transformer", "cell must be one of rnn, lstm, gru, got 'transformer'"),
        ("hidden_size", 2.5, "hidden_size must be an integer, got 2.5"),
        ("dtype", "float16", "dtype must be one of float32, float64"),
        ("input_size", 14, "input_size must be 28"),
    ],
)
def test_invalid_values_are_refused_with_a_message_naming_them(field, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Config(**{field: value})


def test_config_round_trips_through_json():
    config = dataclasses.replace(get_preset("bilstm2x128"), dtype="float64", seed=7)
    assert Config.from_json(config.to_json()) == config


def test_from_dict_refuses_unknown_fields():
    with pytest.raises(ConfigError, match="unknown config field"):
        Config.from_dict({"cell": "lstm", "dropout": 0.5})


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_print_config_prints_the_resolved_preset_as_json(framework, capsys):
    result = run_module(f"{framework}_impl.train", ["--preset", "bilstm", "--print-config"], capsys)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed == get_preset("bilstm").to_dict()
    assert (
        printed["cell"],
        printed["bidirectional"],
        printed["hidden_size"],
        printed["num_layers"],
        printed["learning_rate"],
        printed["batch_size"],
        printed["epochs"],
    ) == ("lstm", True, 64, 1, 0.01, 64, 1)


@pytest.mark.parametrize("name", PRESETS)
def test_both_trainers_resolve_every_preset_identically(name, capsys):
    outputs = [run_main(main, ["--preset", name, "--print-config"], capsys)[1] for main in (torch_main, jax_main)]
    assert outputs[0] == outputs[1] and json.loads(outputs[0]) == get_preset(name).to_dict()


def test_flags_override_the_preset(capsys):
    _, out, _ = run_main(
        torch_main,
        [
            "--preset",
            "lstm",
            "--epochs",
            "3",
            "--hidden-size",
            "128",
            "--bidirectional",
            "--cell",
            "gru",
            "--dtype",
            "float64",
            "--print-config",
        ],
        capsys,
    )
    printed = json.loads(out)
    assert (printed["epochs"], printed["hidden_size"], printed["bidirectional"], printed["cell"], printed["dtype"]) == (
        3,
        128,
        True,
        "gru",
        "float64",
    )


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--learning-rate", "-1"], "--learning-rate must be a positive finite number"),
        (["--batch-size", "0"], "--batch-size must be positive"),
        (["--cell", "transformer"], "--cell"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["--epochs", "two"], "--epochs"),
        (["--max-steps", "0"], "--max-steps"),
    ],
)
@pytest.mark.parametrize("main", [torch_main, jax_main], ids=["torch", "jax"])
def test_bad_flags_exit_2_with_one_line(main, args, fragment, capsys):
    code, _, err = run_main(main, [*args, "--print-config"], capsys)
    assert_one_line(code, err, 2, fragment)


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_a_bad_flag_on_the_real_command_line_exits_2(framework):
    assert_one_line_error(run_cli(f"{framework}_impl.train", "--preset", "nope"), 2, "unknown preset 'nope'")
