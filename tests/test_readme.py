"""The README and docs pages: every command they show names a real module and real flags, every link resolves."""

from __future__ import annotations

import importlib
import re
import shlex

import pytest

from tests.conftest import ROOT

PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


def shown_commands() -> list[tuple[str, list[str]]]:
    """(page, argv after `python -m`) for every `python -m ...` line in a bash block of the pages."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
            for line in block.splitlines():
                for command in re.split(r"&&|;|\|", line.split("  #")[0]):
                    words = shlex.split(command.strip().rstrip("&").strip())
                    while words and "=" in words[0]:  # VAR=value before the command
                        words = words[1:]
                    if "-m" in words and words[0].endswith("python"):
                        found.append((page.name, words[words.index("-m") + 1 :]))
    return found


COMMANDS = [(page, argv) for page, argv in shown_commands() if argv[0] not in ("venv", "pytest", "pip")]


def help_text(module: str, capsys) -> str:
    main = importlib.import_module(
        module
        if module.endswith(("train", "evaluate", "convert", "plot"))
        else f"{module}.__main__"
        if module in ("parity", "bench")
        else module
    ).main
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_the_pages_show_commands():
    modules = {argv[0] for _, argv in COMMANDS}
    assert {"torch_impl.train", "jax_impl.train", "parity", "bench", "parity.accuracy"} <= modules


@pytest.mark.parametrize("page, argv", COMMANDS, ids=[f"{page}:{' '.join(argv)[:60]}" for page, argv in COMMANDS])
def test_every_shown_command_names_a_real_module_and_real_flags(page, argv, capsys):
    text = help_text(argv[0], capsys)
    for flag in (word.split("=")[0] for word in argv[1:] if word.startswith("--")):
        assert re.search(rf"{re.escape(flag)}\b", text), f"{page}: {' '.join(argv)}: no flag {flag} in --help"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_and_image_resolves(page):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if not target.startswith("http"):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


def test_the_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) < 250


def test_the_readme_lists_every_trainer_flag_and_the_exit_codes():
    from common.cli import build_train_parser

    readme = (ROOT / "README.md").read_text().replace("--[no-]", "--")
    flags = {
        option
        for action in build_train_parser("python -m torch_impl.train", "torch")._actions
        for option in action.option_strings
        if option.startswith("--") and not option.startswith("--no-") and option != "--help"
    }
    assert not sorted(flag for flag in flags if f"`{flag}" not in readme)
    assert "| 2 | the command line is wrong" in readme and "| 1 | the data or a file is wrong" in readme
