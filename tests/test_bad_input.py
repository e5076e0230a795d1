"""Every bad input, through every command that reads it: one line naming the problem, non-zero exit, nothing written."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from safetensors.numpy import save

from common.presets import get_preset
from common.weights import initial_weights, save_weights
from jax_impl.evaluate import main as jax_evaluate
from jax_impl.train import main as jax_train
from tests.conftest import assert_one_line, idx_bytes, run_main
from torch_impl.evaluate import main as torch_evaluate
from torch_impl.train import main as torch_train

TRAINERS = {"torch train": torch_train, "jax train": jax_train}
EVALUATORS = {"torch evaluate": torch_evaluate, "jax evaluate": jax_evaluate}


def rewrite(path, mutate):
    with gzip.open(path, "rb") as handle:
        payload = handle.read()
    path.write_bytes(gzip.compress(mutate(payload)))


DATA_PROBLEMS = {
    "missing file": (lambda d: (d / "t10k-images-idx3-ubyte.gz").unlink(), "missing t10k-images-idx3-ubyte"),
    "empty file": (lambda d: (d / "train-labels-idx1-ubyte.gz").write_bytes(b""), "train-labels-idx1-ubyte.gz: empty"),
    "truncated": (lambda d: rewrite(d / "t10k-images-idx3-ubyte.gz", lambda p: p[:-1]), "truncated"),
    "wrong magic": (
        lambda d: rewrite(d / "t10k-images-idx3-ubyte.gz", lambda p: b"\x00\x00\x08\x01" + p[4:]),
        "not an IDX images file",
    ),
    "count mismatch": (
        lambda d: (d / "t10k-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(idx_bytes(np.zeros(3, np.uint8), "labels"))
        ),
        "100 images but 3 labels",
    ),
    "label out of range": (
        lambda d: rewrite(d / "t10k-labels-idx1-ubyte.gz", lambda p: p[:-1] + b"\x0b"),
        "labels must lie in 0..9",
    ),
}


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    config = get_preset("lstm")
    path = tmp_path_factory.mktemp("weights") / "lstm.safetensors"
    save_weights(path, initial_weights(config), config)
    return path


@pytest.mark.parametrize("problem", DATA_PROBLEMS)
@pytest.mark.parametrize("command", [*TRAINERS, *EVALUATORS])
def test_bad_data_files(idx_dir, tmp_path, weights_file, command, problem, capsys):
    mutate, fragment = DATA_PROBLEMS[problem]
    mutate(idx_dir)
    main = {**TRAINERS, **EVALUATORS}[command]
    target = ["--out", str(tmp_path / "run")] if command in TRAINERS else ["--weights", str(weights_file)]
    code, _, err = run_main(main, ["--data-dir", str(idx_dir), *target], capsys)
    if command in EVALUATORS and "train-" in fragment:  # an evaluation reads the test files only
        assert code == 0, err
        return
    assert_one_line(code, err, 1, fragment)
    assert not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.parametrize("command", [*TRAINERS, *EVALUATORS])
def test_a_data_dir_that_does_not_exist(tmp_path, weights_file, command, capsys):
    main = {**TRAINERS, **EVALUATORS}[command]
    target = ["--out", str(tmp_path / "run")] if command in TRAINERS else ["--weights", str(weights_file)]
    code, _, err = run_main(main, ["--data-dir", str(tmp_path / "nowhere"), *target], capsys)
    assert_one_line(code, err, 2, "nowhere: no such directory")


def edited(config, edit):
    weights = initial_weights(config)
    edit(weights)
    return weights


WEIGHT_PROBLEMS = {
    "not safetensors": (lambda path, config: path.write_bytes(b"PK\x03\x04 a zip"), "not a safetensors weights file"),
    "missing tensor": (
        lambda path, config: path.write_bytes(
            save(edited(config, lambda w: w.pop("out.bias")), {"config": config.to_json()})
        ),
        "missing tensor out.bias",
    ),
    "extra tensor": (
        lambda path, config: path.write_bytes(
            save(
                edited(config, lambda w: w.update({"head.weight": np.zeros(3, np.float32)})),
                {"config": config.to_json()},
            )
        ),
        "unexpected tensor head.weight",
    ),
    "mis-shaped": (
        lambda path, config: path.write_bytes(
            save(
                edited(config, lambda w: w.update({"out.bias": np.zeros(9, np.float32)})), {"config": config.to_json()}
            )
        ),
        "out.bias has shape (9,), expected (10,)",
    ),
    "non-float": (
        lambda path, config: path.write_bytes(
            save(edited(config, lambda w: w.update({"out.bias": np.zeros(10, np.int64)})), {"config": config.to_json()})
        ),
        "out.bias has dtype int64",
    ),
    "nan": (
        lambda path, config: path.write_bytes(
            save(
                edited(config, lambda w: w["rnn.weight_hh_l0"].__setitem__((0, 0), np.nan)),
                {"config": config.to_json()},
            )
        ),
        "rnn.weight_hh_l0 holds NaN or inf",
    ),
}


@pytest.mark.parametrize("problem", WEIGHT_PROBLEMS)
@pytest.mark.parametrize("command", [*EVALUATORS, *TRAINERS])
def test_bad_weights_files(tmp_path, command, problem, capsys):
    write, fragment = WEIGHT_PROBLEMS[problem]
    path = tmp_path / "w.safetensors"
    write(path, get_preset("lstm"))
    main = {**TRAINERS, **EVALUATORS}[command]
    args = (
        ["--weights", str(path)]
        if command in EVALUATORS
        else ["--init-weights", str(path), "--out", str(tmp_path / "r")]
    )
    code, _, err = run_main(main, args, capsys)
    assert_one_line(code, err, 1, fragment)


@pytest.mark.parametrize("command", [*EVALUATORS, *TRAINERS])
def test_weights_for_another_model_than_the_flags(tmp_path, weights_file, command, capsys):
    main = {**TRAINERS, **EVALUATORS}[command]
    args = (
        ["--weights", str(weights_file), "--preset", "lstm2"]
        if command in EVALUATORS
        else ["--preset", "lstm2", "--init-weights", str(weights_file), "--out", str(tmp_path / "r")]
    )
    code, _, err = run_main(main, args, capsys)
    assert_one_line(code, err, 1, "holds num_layers=1 but the flags ask for 2")


def test_jax_evaluate_points_a_pickle_to_the_converter(tmp_path, capsys):
    (tmp_path / "rnn.pkl").write_bytes(b"\x80\x02}q\x00.")
    code, _, err = run_main(jax_evaluate, ["--weights", str(tmp_path / "rnn.pkl"), "--preset", "lstm"], capsys)
    assert_one_line(code, err, 1, "python -m torch_impl.convert")
