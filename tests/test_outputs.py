"""Every output path is checked before any work, a run that fails before it starts leaves no folder, and a
reader that closes the pipe early gets a quiet end."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from tests.conftest import ROOT, assert_one_line, run_main, run_module

pytestmark = pytest.mark.trains  # the trainer refusals below start real commands


@pytest.fixture
def blocker(tmp_path):
    """A regular file: nothing can be written under it."""
    path = tmp_path / "a-file"
    path.write_text("not a folder\n")
    return path


UNWRITABLE = [  # (command line, flag at fault); {file} is a regular file, {dir} an existing folder
    (["torch_impl.train", "--out", "{file}/run", "--max-steps", "1"], "--out"),
    (["jax_impl.train", "--out", "{file}/run", "--max-steps", "1"], "--out"),
    (["parity", "--presets", "lstm", "--json", "{file}/rows.json"], "--json"),
    (["parity", "--presets", "lstm", "--json", "{dir}"], "--json"),
    (["parity", "--presets", "lstm", "--plot", "{file}"], "--plot"),
    (["parity.accuracy", "--presets", "lstm", "--work", "{file}/work"], "--work"),
    (["parity.accuracy", "--presets", "lstm", "--json", "{dir}"], "--json"),
    (["bench", "--presets", "lstm", "--json", "{file}/b.json"], "--json"),
    (["bench", "--presets", "lstm", "--sweep", "batch", "--plot", "{dir}"], "--plot"),
    (["bench.wall", "--presets", "lstm", "--json", "{file}/w.json"], "--json"),
    (["torch_impl.convert", "x.pkl", "--preset", "lstm", "--out", "{file}/x.safetensors"], "--out"),
    (["torch_impl.plot", "runs/x", "--out", "{dir}"], "--out"),
]


@pytest.mark.parametrize("argv, flag", UNWRITABLE, ids=[" ".join(argv[:1] + argv[-2:]) for argv, _ in UNWRITABLE])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(argv, flag, blocker, tmp_path, capsys):
    """Each command's `main` in this process (the one-line error is the command's own; a command's exit as a
    process is the tests' below and test_cli_manners'): refused before any training or check has started."""
    argv = [arg.format(file=blocker, dir=tmp_path) for arg in argv]
    module = importlib.import_module(argv[0] if "." in argv[0] else f"{argv[0]}.__main__")
    code, _, err = run_main(module.main, argv[1:], capsys)
    assert_one_line(code, err, 2, flag)


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_a_run_that_fails_before_its_first_step_leaves_no_folder(framework, tmp_path, capsys):
    train = f"{framework}_impl.train"
    bad_data = run_module(train, ["--out", str(tmp_path / "a" / "run"), "--data-dir", str(tmp_path)], capsys)
    assert bad_data.returncode == 1 and not (tmp_path / "a").exists(), bad_data.stderr
    (tmp_path / "garbage.safetensors").write_bytes(b"no weights here")
    bad_init = run_module(
        train, ["--out", str(tmp_path / "b"), "--init-weights", str(tmp_path / "garbage.safetensors")], capsys
    )
    assert bad_init.returncode != 0 and not (tmp_path / "b").exists(), bad_init.stderr


def test_output_piped_into_a_command_that_closes_early_ends_quietly():
    """More than a pipe holds, so the writer does meet the closed pipe (`... --json | head -c 300`)."""
    program = (
        "import sys; from common.outputs import entry_point; sys.exit(entry_point(lambda: print('x' * 1_000_000) or 0))"
    )
    result = subprocess.run(
        ["bash", "-c", f'{sys.executable} -c "{program}" | head -c 300'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.stdout == "x" * 300
    assert result.stderr == "", result.stderr


def test_every_command_runs_through_the_quiet_entry_point():
    packages = ("common", "torch_impl", "jax_impl", "parity", "bench", "examples")
    commands = [
        path
        for package in packages
        for path in (ROOT / package).rglob("*.py")
        if 'if __name__ == "__main__":' in path.read_text()
    ]
    assert len(commands) == 21  # then examples.vit.port, examples.gpt2.port and examples.zoo_traps added
    for path in commands:
        assert "sys.exit(entry_point(main))" in path.read_text(), path
