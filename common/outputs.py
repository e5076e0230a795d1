"""What a command writes: its output paths checked before any work, and a reader that hangs up early.

A command checks every output path it was given right after parsing its flags, so that a path it cannot
write to is refused in one line before minutes of training or checking, not in a traceback after them.
Missing parent folders are fine (they are created); what no write could fix is refused.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from common.errors import ConfigError


def _nearest_existing(path: Path) -> Path:
    """`path` itself or the closest ancestor of it that exists."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _check_writable_place(folder: Path, path: Path, flag: str) -> None:
    """`folder` exists as a folder we may write in, or can be made: its nearest existing ancestor is one."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise ConfigError(f"{flag} {path}: {existing} is a file, so no folder can be made under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: {existing} is not writable")


def check_output_file(path: str | Path | None, flag: str) -> None:
    """Refuse an output file that cannot be written: a folder by that name, or no writable place for it."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder; expected a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{flag} {path}: exists and is not writable")
    _check_writable_place(path.parent, path, flag)


def check_output_dir(path: str | Path | None, flag: str) -> None:
    """Refuse an output folder that cannot be made or written: a file by that name, or under a file."""
    if path is None:
        return
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: exists and is not a folder")
    _check_writable_place(path, path, flag)


def entry_point(main: Callable[[], int]) -> int:
    """Run a command's `main`; a reader that closes the pipe early (`... | head`) ends it quietly."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would print a traceback when it flushes stdout at exit: point stdout at nothing first
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code
