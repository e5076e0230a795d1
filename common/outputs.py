"""What a command writes: its output paths checked before any work, and a reader that hangs up early.

Every command claims each output path it was given right after parsing its flags (`claim_output_file`,
`claim_output_folder`): it tries to write there, so that a path it cannot write to is refused in one line
(exit 2) before minutes of training or checking, not in a traceback after them. Writes are atomic
(`write_atomically`, `save_figure`): a failed one names the path in one line (exit 1) and keeps the old file.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.errors import ConfigError, SeqMnistError


def _nearest_existing(path: Path) -> Path:
    """`path` itself or the closest ancestor of it that exists."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _prove_writable(folder: Path, path: Path, flag: str, keep_folders: bool) -> None:
    """Make `folder` (and any missing parent) and write a temporary file there: trying, not `os.access`,
    which says yes to root where the kernel then says no (`/proc`). Folders made are removed again unless
    `keep_folders`."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise ConfigError(f"{flag} {path}: {existing} is a file, so no folder can be made under it")
    missing = [candidate for candidate in (folder, *folder.parents) if not candidate.exists()]
    made: list[Path] = []
    try:
        for candidate in reversed(missing):
            candidate.mkdir()
            made.append(candidate)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-", suffix=".tmp")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        where = made[-1] if made else (missing[-1] if missing else folder)
        raise ConfigError(f"{flag} {path}: cannot write in {where} ({error.strerror or error})") from None
    finally:
        if not keep_folders:
            for candidate in reversed(made):
                with contextlib.suppress(OSError):
                    candidate.rmdir()


def plot_formats() -> tuple[str, ...]:
    """The file suffixes matplotlib can write (`png`, `pdf`, `svg`, ...)."""
    from matplotlib.backend_bases import FigureCanvasBase

    return tuple(sorted(FigureCanvasBase.get_supported_filetypes()))


def claim_output_file(path: str | Path, flag: str, *, overwrite: bool = False, plot: bool = False) -> Path:
    """Make sure `path` can be written, before any work: the exact file that will be written.

    Refused in one line (a `ConfigError`, exit 2): a folder by that name; a place where no file can be
    written (tried, with a temporary file); an existing file unless `overwrite`; for a `plot`, a suffix
    matplotlib cannot write (no suffix means `.png`, as matplotlib reads it). Missing parent folders are made.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder; expected a file name")
    if plot:
        suffix = path.suffix.lstrip(".").lower()
        if not suffix:
            path = path.with_name(path.name + ".png")
        elif suffix not in plot_formats():
            formats = ", ".join(plot_formats())
            raise ConfigError(f"{flag} {path}: .{suffix} is not a picture format; expected one of {formats}")
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder; expected a file name")
    if path.exists() and not overwrite:
        raise ConfigError(f"{flag} {path}: exists; pass --overwrite to replace it, or another name")
    if path.exists():
        try:
            os.close(os.open(path, os.O_WRONLY))  # opened, not truncated: its bytes stay as they are
        except OSError as error:
            raise ConfigError(f"{flag} {path}: exists and cannot be written ({error.strerror or error})") from None
    _prove_writable(path.parent, path, flag, keep_folders=True)
    return path


def claim_output_folder(path: str | Path, flag: str) -> Path:
    """Make sure a folder can be made (or is there) and written in, before any work; leaves nothing behind.

    Refused in one line: a file by that name, or a place where nothing can be written (tried). What an
    existing folder may hold is the command's own question (a trainer refuses a finished run)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: exists and is not a folder")
    _prove_writable(path, path, flag, keep_folders=False)
    return path


def write_atomically(path: Path, payload: bytes) -> None:
    """Temporary file in the same directory, fsync, rename: a crash leaves the old file or the new one.

    An `OSError` becomes one line (`SeqMnistError`, exit 1) naming the path and the reason."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise SeqMnistError(f"{path}: could not write it ({error.strerror or error})") from None
    try:
        os.chmod(temporary, 0o666 & ~current_umask())  # mkstemp's 0600 -> what open() would give
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:  # a full disk, a permission lost: the previous file, if any, is untouched
        Path(temporary).unlink(missing_ok=True)
        raise SeqMnistError(
            f"{path}: could not write it ({error.strerror or error}); the previous file is intact"
        ) from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_figure(figure: Any, path: Path, dpi: int) -> None:
    """A matplotlib figure written atomically, in the format its suffix names."""
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=dpi, format=path.suffix.lstrip(".").lower() or "png")
    write_atomically(path, buffer.getvalue())


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
