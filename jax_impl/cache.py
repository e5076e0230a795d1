"""JAX's persistent compilation cache, on by default for every command that compiles.

A JAX command compiles its train chunk and its evaluation program again in every process; kept on disk,
the second run of the same command loads them instead. Where the cache lives:

- `$JAX_COMPILATION_CACHE_DIR` when it is set (JAX's own variable, respected as it is);
- else `$XDG_CACHE_HOME/seqmnist/jax`, else `~/.cache/seqmnist/jax`.

`SEQMNIST_JAX_CACHE=0` turns it off. Clearing it is deleting that folder. Only programs that took at
least `MIN_COMPILE_SECONDS` to compile are kept (the train chunk and the evaluation programs, not every
small eager operation). A folder that cannot be written turns the cache off with one line on stderr.
An entry that cannot be read (corrupt; truncated by a process killed while writing it; being written by
another process at that moment, since JAX writes entries in place) is one line on stderr, never a
failure: the program is compiled, and the entry removed and written anew.

The cache must be set before the first compile of the process: the commands call
`enable_compilation_cache()` first thing, and so do `check_port`, `infer_port` and `check_reference`
(a program that set `jax_compilation_cache_dir` itself keeps its own). The benchmark leaves it off: its
compile seconds are a compile's.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import warnings
from pathlib import Path

import jax

SWITCH = "SEQMNIST_JAX_CACHE"  # 0, false, no or off: no persistent cache
MIN_COMPILE_SECONDS = 0.2  # the train chunk and evaluation compile in seconds; eager ops in milliseconds
_CACHE_WARNING = r"Error (reading|writing) persistent compilation cache entry"


def cache_folder() -> Path | None:
    """Where the cache lives, or None when `SEQMNIST_JAX_CACHE` turns it off."""
    if os.environ.get(SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "seqmnist" / "jax"


def _writable(folder: Path) -> str | None:
    """None when `folder` can be made and written to, else why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as error:
        return error.strerror or type(error).__name__
    return None


def _configured_folder() -> str | None:
    """JAX's `jax_compilation_cache_dir` setting now (not in jax.config's type stubs)."""
    folder: str | None = getattr(jax.config, "jax_compilation_cache_dir", None)
    return folder


def _one_line(message, category, filename, lineno, file=None, line=None) -> None:  # warnings.showwarning's shape
    """JAX's warning about a cache entry it could not read or write, as one line. An entry it could not read
    is removed (every entry of that program's name), so that this run's compile writes it anew."""
    text = str(message)
    if category is UserWarning and "persistent compilation cache" in text:
        unreadable = re.match(r"Error reading persistent compilation cache entry for '([^'/]+)'", text)
        folder = _configured_folder()
        if unreadable and folder:
            for entry in Path(folder).glob(f"{unreadable.group(1)}-*-cache"):
                entry.unlink(missing_ok=True)
        print(f"note: {text.splitlines()[0]}; compiled instead", file=sys.stderr)
        return
    _show_warning(message, category, filename, lineno, file, line)


_show_warning = warnings.showwarning


def enable_compilation_cache() -> Path | None:
    """Point JAX's persistent compilation cache at `cache_folder()`: the folder, or None when it is off or
    cannot be written (then one line on stderr says so). Idempotent; call it before the first compile."""
    global _show_warning
    folder = cache_folder()
    if folder is None:
        jax.config.update("jax_compilation_cache_dir", None)  # off, whatever JAX_COMPILATION_CACHE_DIR says
        return None
    own = _configured_folder()
    if own and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(own)  # the program set its own: left as it is
    problem = _writable(folder)
    if problem:
        print(
            f"note: JAX compilation cache off: cannot write {folder} ({problem}); compiling as usual", file=sys.stderr
        )
        return None
    if warnings.showwarning is not _one_line:
        _show_warning = warnings.showwarning
        warnings.showwarning = _one_line
    warnings.filterwarnings("once", message=_CACHE_WARNING, category=UserWarning)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
