"""JAX's persistent compilation cache (jax_impl/cache.py): where it lives, the switch that turns it off, and
that it never fails a run: a folder that cannot be written, entries that cannot be read, two processes at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jax_impl import cache
from tests.conftest import ROOT, small_mnist_dir


def test_the_folder_follows_jax_then_xdg_then_home_and_the_switch_turns_it_off(monkeypatch, tmp_path):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_folder() == tmp_path / "xdg" / "seqmnist" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_folder() == tmp_path / "home" / ".cache" / "seqmnist" / "jax"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
    assert cache.cache_folder() == tmp_path / "mine"
    before = cache.jax.config.jax_compilation_cache_dir  # this session's cache (tests/conftest.py)
    try:
        for off in ("0", "false", "OFF", "no"):
            monkeypatch.setenv(cache.SWITCH, off)
            assert cache.cache_folder() is None and cache.enable_compilation_cache() is None
            assert cache.jax.config.jax_compilation_cache_dir is None  # off, though the variable names a folder
    finally:
        cache.jax.config.update("jax_compilation_cache_dir", before)


def test_a_folder_that_cannot_be_written_turns_the_cache_off_in_one_line(monkeypatch, tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "file" / "cache"))
    assert cache.enable_compilation_cache() is None
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: JAX compilation cache off: cannot write"), lines
    assert str(tmp_path / "file" / "cache") in lines[0]


def train(out: Path, folder: Path, **env: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "jax_impl.train", "--preset", "lstm", "--max-steps", "3", "--out", str(out)]
    command += ["--data-dir", str(small_mnist_dir())]  # real MNIST cut to 5,000 images: the cache is the subject
    environment = {**os.environ, "CI": "true", "PYTHONPATH": str(ROOT), "JAX_COMPILATION_CACHE_DIR": str(folder), **env}
    return subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finished(process: subprocess.Popen) -> tuple[int, str]:
    _, err = process.communicate(timeout=300)
    return process.returncode, err


@pytest.mark.trains
def test_two_processes_share_a_cache_and_unreadable_entries_are_compiled_and_written_anew(tmp_path):
    folder = tmp_path / "cache"
    first, second = train(tmp_path / "a", folder), train(tmp_path / "b", folder)  # at once, on an empty cache
    assert finished(first)[0] == 0 and finished(second)[0] == 0
    entries = sorted(folder.glob("*-cache"))
    assert entries, "nothing was kept"
    weights = (tmp_path / "a" / "model.safetensors").read_bytes()
    assert (tmp_path / "b" / "model.safetensors").read_bytes() == weights
    cold = json.loads((tmp_path / "a" / "summary.json").read_text())["compile_seconds"]

    warm = finished(train(tmp_path / "c", folder))
    assert warm == (0, ""), warm  # every program found: nothing to say
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["compile_seconds"] < cold

    for entry in entries:  # as a process killed while writing leaves them
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    code, err = finished(train(tmp_path / "d", folder))
    assert code == 0 and (tmp_path / "d" / "model.safetensors").read_bytes() == weights
    lines = err.strip().splitlines()
    assert lines and all(line.startswith("note: Error reading persistent compilation cache entry") for line in lines)
    assert all(line.endswith("compiled instead") for line in lines), lines
    assert finished(train(tmp_path / "e", folder)) == (0, "")  # the entries were written anew


@pytest.mark.trains
def test_the_switch_keeps_a_run_off_the_cache(tmp_path):
    folder = tmp_path / "cache"
    assert finished(train(tmp_path / "a", folder, SEQMNIST_JAX_CACHE="0"))[0] == 0
    assert not list(folder.glob("*-cache"))
