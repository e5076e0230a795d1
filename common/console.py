"""What a command shows while it works: a progress bar on a terminal, plain lines in CI or a pipe."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, NoReturn, TypeVar

if TYPE_CHECKING:
    from tqdm import tqdm

Item = TypeVar("Item")


def show_progress() -> bool:
    """Progress bars on a terminal; plain lines when stdout is not a TTY or under CI=true."""
    return sys.stdout.isatty() and os.environ.get("CI", "").lower() not in ("1", "true", "yes")


def progress(items: Iterable[Item], description: str) -> Iterable[Item]:
    """`items` with a tqdm bar on a terminal; the plain iterable under CI=true or when piped."""
    if not show_progress():
        return items
    from tqdm import tqdm

    return tqdm(items, desc=description, dynamic_ncols=True)


def step_bar(total_steps: int, label: str) -> tqdm[NoReturn] | None:
    """A tqdm bar counting training steps, or None where `show_progress()` says plain lines."""
    if not show_progress():
        return None
    from tqdm import tqdm

    return tqdm(total=total_steps, desc=label, unit="step", dynamic_ncols=True)


def format_table(header: Sequence[str], lines: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell, two spaces apart, one line per row."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines, strict=True)]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *lines]
    )


def print_table(header: Sequence[str], lines: Sequence[Sequence[object]]) -> None:
    """`format_table`, printed."""
    print(format_table(header, lines))
