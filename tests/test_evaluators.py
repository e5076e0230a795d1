"""The evaluators take what a user has: a run folder, a training checkpoint, a weights file; they read only
the test set; and a file that is not a pickle is called that."""

from __future__ import annotations

import gzip
import json

import pytest

from jax_impl.evaluate import main as jax_evaluate
from tests.conftest import assert_one_line, run_main
from torch_impl.evaluate import main as torch_evaluate
from torch_impl.train import main as torch_train

pytestmark = pytest.mark.trains  # one short training to evaluate


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluators") / "run"
    code = torch_train(["--max-steps", "20", "--checkpoint-every", "20", "--log-every", "10", "--out", str(out)])
    assert code == 0
    return out


def evaluated(main, weights: str, capsys, *extra: str) -> dict:
    code, out, err = run_main(main, ["--weights", weights, "--limit", "500", "--json", *extra], capsys)
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("main", [torch_evaluate, jax_evaluate], ids=["torch", "jax"])
def test_a_run_folder_and_its_checkpoint_evaluate_as_its_weights_file(main, run_folder, capsys):
    checkpoint = run_folder / "checkpoints" / "step-00000020.safetensors"
    from_file = evaluated(main, str(run_folder / "model.safetensors"), capsys)
    from_folder = evaluated(main, str(run_folder), capsys)
    from_checkpoint = evaluated(main, str(checkpoint), capsys)
    from_checkpoint_with_preset = evaluated(main, str(checkpoint), capsys, "--preset", "lstm")
    assert from_file["predictions"] == from_folder["predictions"] == from_checkpoint["predictions"]
    assert from_checkpoint_with_preset["predictions"] == from_file["predictions"]
    assert from_file["accuracy"] == from_checkpoint["accuracy"] > 0.2


def test_a_folder_that_is_not_a_finished_run_is_named_in_one_line(run_folder, tmp_path, capsys):
    code, _, err = run_main(torch_evaluate, ["--weights", str(tmp_path)], capsys)
    assert_one_line(code, err, 1, "not a run folder (no model.safetensors")
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints").mkdir(parents=True)
    checkpoint = run_folder / "checkpoints" / "step-00000020.safetensors"
    (unfinished / "checkpoints" / checkpoint.name).write_bytes(checkpoint.read_bytes())
    code, _, err = run_main(jax_evaluate, ["--weights", str(unfinished)], capsys)
    assert_one_line(code, err, 1, "without model.safetensors", "step-00000020.safetensors")


@pytest.mark.parametrize("main", [torch_evaluate, jax_evaluate], ids=["torch", "jax"])
def test_evaluation_reads_only_the_test_set(main, run_folder, idx_dir, capsys):
    images = idx_dir / "train-images-idx3-ubyte.gz"
    images.write_bytes(gzip.compress(gzip.decompress(images.read_bytes())[:-100]))  # a truncated training file
    result = evaluated(main, str(run_folder), capsys, "--data-dir", str(idx_dir))
    assert result["n"] == 100  # the folder's test set, evaluated
    code, _, err = run_main(
        torch_train, ["--max-steps", "1", "--data-dir", str(idx_dir), "--out", str(idx_dir / "r")], capsys
    )
    assert_one_line(code, err, 1, "truncated")  # training does need the training set


@pytest.mark.parametrize("content", [b"just some text\n", b'{"weights": [1, 2]}', bytes(range(256))])
def test_a_file_that_is_not_a_pickle_is_called_that(content, tmp_path, capsys):
    path = tmp_path / "rnn.pkl"
    path.write_bytes(content)
    code, _, err = run_main(torch_evaluate, ["--weights", str(path), "--preset", "lstm"], capsys)
    assert_one_line(code, err, 1, "not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    assert "could run code" not in err
