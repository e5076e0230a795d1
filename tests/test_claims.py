"""Every output a command writes is claimed right after parsing (common/outputs.py): tried, not guessed.

The five-case matrix: every command that takes an output path, sent under a regular file, into /proc, with
an unsupported suffix (pictures), onto an existing file, and into a missing folder. The first four end in one
line, exit 2, before any work, and leave every existing file's bytes as they were; the fifth is made.
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

import pytest

from common.errors import ConfigError
from common.outputs import claim_output_file, claim_output_folder
from tests.conftest import run_main

# (module whose main() runs, the arguments before the output flag, the output flag, what it writes)
OUTPUTS = [
    ("torch_impl.train", ["--max-steps", "1"], "--out", "folder"),
    ("jax_impl.train", ["--max-steps", "1"], "--out", "folder"),
    ("torch_impl.convert", ["tutorial.pth", "--preset", "lstm"], "--out", "file"),
    ("torch_impl.plot", ["runs/x"], "--out", "picture"),
    ("jax_impl.plot", ["runs/x"], "--out", "picture"),
    ("parity.__main__", ["--presets", "lstm", "--checks", "1"], "--json", "file"),
    ("parity.__main__", ["--presets", "lstm", "--checks", "1"], "--plot", "folder"),
    ("parity.__main__", ["--presets", "lstm", "--checks", "accuracy"], "--work", "folder"),
    ("parity.accuracy", ["--presets", "lstm"], "--json", "file"),
    ("parity.accuracy", ["--presets", "lstm"], "--plot", "picture"),
    ("parity.accuracy", ["--presets", "lstm"], "--work", "folder"),
    ("bench", ["--presets", "lstm"], "--json", "file"),
    ("bench", ["--presets", "lstm", "--sweep", "batch"], "--plot", "picture"),
]
CASES = {  # case -> the output path, from the test's folder (which holds `a-file` and `existing.png`)
    "under a regular file": lambda tmp: tmp / "a-file" / "out.png",
    "in /proc": lambda tmp: Path("/proc/seqmnist-claim-test/out.png"),
    "onto an existing file": lambda tmp: tmp / "existing.png",
    "unsupported suffix": lambda tmp: tmp / "out.txt",
}
EXPECTED = {
    "under a regular file": "is a file, so no folder can be made under it",
    "in /proc": "cannot write in /proc/seqmnist-claim-test",
    "onto an existing file": "exists",
    "unsupported suffix": ".txt is not a picture format",
}


def main_of(module: str):
    return importlib.import_module(module if module != "bench" else "bench.__main__").main


def fingerprint(folder: Path) -> dict[str, str]:
    return {str(path): hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.rglob("*") if path.is_file()}


MATRIX = [
    (module, before, flag, kind, case)
    for module, before, flag, kind in OUTPUTS
    for case in CASES
    if case != "unsupported suffix" or kind == "picture"
]


@pytest.mark.parametrize("module, before, flag, kind, case", MATRIX, ids=[f"{m} {f} {c}" for m, _, f, _, c in MATRIX])
def test_an_output_that_cannot_be_claimed_is_one_line_before_any_work(
    module, before, flag, kind, case, tmp_path, capsys
):
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "existing.png").write_bytes(b"a picture someone keeps")
    kept = fingerprint(tmp_path)
    path = CASES[case](tmp_path)
    code, _, err = run_main(main_of(module), [*before, flag, str(path)], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert flag in lines[0], lines[0]
    expected = (
        "exists and is not a folder" if (case == "onto an existing file" and kind == "folder") else EXPECTED[case]
    )
    assert expected in lines[0], lines[0]
    assert fingerprint(tmp_path) == kept
    assert not Path("/proc/seqmnist-claim-test").exists()


def test_a_file_claim_makes_missing_folders_and_returns_the_exact_path(tmp_path):
    path = claim_output_file(tmp_path / "new" / "deeper" / "rows.json", "--json")
    assert path == tmp_path / "new" / "deeper" / "rows.json" and path.parent.is_dir() and not path.exists()
    assert list(path.parent.iterdir()) == []  # the probe file is gone


def test_a_picture_without_a_suffix_is_the_png_matplotlib_writes(tmp_path):
    assert claim_output_file(tmp_path / "cmp", "--out", plot=True) == tmp_path / "cmp.png"
    (tmp_path / "cmp.png").write_bytes(b"old")
    with pytest.raises(ConfigError, match="cmp.png: exists; pass --overwrite"):
        claim_output_file(tmp_path / "cmp", "--out", plot=True)
    assert claim_output_file(tmp_path / "cmp", "--out", plot=True, overwrite=True) == tmp_path / "cmp.png"
    assert (tmp_path / "cmp.png").read_bytes() == b"old"


def test_a_folder_claim_leaves_nothing_behind(tmp_path):
    assert claim_output_folder(tmp_path / "a" / "run", "--out") == tmp_path / "a" / "run"
    assert not (tmp_path / "a").exists()


@pytest.mark.trains
def test_parity_json_into_a_missing_folder_is_written_and_named(tmp_path, capsys):
    """Issue 27's case 2: it used to run the whole check, then end in a traceback at write_text."""
    from tests.conftest import run_module

    path = tmp_path / "missing" / "x.json"
    flags = ["--presets", "lstm", "--checks", "1", "--images", "4", "--json", str(path)]
    result = run_module("parity.__main__", flags, capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    assert path.is_file() and result.stdout.strip().splitlines()[-1] == f"wrote {path}"
