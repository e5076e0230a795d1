"""A run's output folder: its files, when a folder may be written into, and picking up a killed run."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from common.checkpoint import Checkpoint, checkpoint_paths, latest_readable_checkpoint
from common.config import Config
from common.errors import ConfigError, SeqMnistError
from common.outputs import claim_output_folder, write_atomically

LOCK_FILE = ".lock"
RUN_FILES = ("config.json", "metrics.jsonl", "model.safetensors", "summary.json")


def default_out_dir(framework: str, preset: str) -> Path:
    return Path("runs") / f"{framework}-{preset}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_out_dir(out: Path, overwrite: bool, resume: bool = False) -> None:
    """Refuse a folder that cannot be written, or that already holds a run unless --overwrite (or --resume).

    Nothing is left here: a run that fails before it starts leaves no folder behind.
    """
    claim_output_folder(out, "--out")
    existing = [name for name in RUN_FILES if (out / name).exists()] + [p.name for p in checkpoint_paths(out)]
    if resume:
        if not (out / "config.json").is_file():
            raise SeqMnistError(f"--out {out}: no run to resume there (no config.json)")
        return
    if existing and not overwrite:
        raise ConfigError(
            f"--out {out} already holds a run ({existing[0]}); pass --resume, --overwrite or another folder"
        )


@contextlib.contextmanager
def locked_out_dir(out: Path) -> Iterator[None]:
    """Create the run folder if need be and hold its lock (`OUT/.lock`) while the run writes there.

    A second process started on the same --out is refused in one line rather than interleaving its
    files with the first's. The lock is the kernel's (flock): a killed run releases it.
    """
    path = out / LOCK_FILE
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = path.open("a")
    except OSError as error:
        raise SeqMnistError(f"--out {out}: could not write there ({error.strerror or error})") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SeqMnistError(
                f"--out {out}: another run is writing there (it holds {path}); wait for it or choose another folder"
            ) from None
        yield


def clear_old_run(out: Path) -> None:
    """--overwrite: drop the old run's log and checkpoints (its other files are replaced as the run goes)."""
    (out / "metrics.jsonl").unlink(missing_ok=True)
    for path in checkpoint_paths(out):
        path.unlink()


def resume_state(out: Path, config: Config) -> Checkpoint:
    """The newest checkpoint of the run in `out`, which must be of the same config as the flags."""
    stored = Config.from_json((out / "config.json").read_text(), str(out / "config.json"))
    if stored != config:
        changed = [f.name for f in dataclasses.fields(Config) if getattr(stored, f.name) != getattr(config, f.name)]
        raise SeqMnistError(
            f"--resume: the run in {out} has {changed[0]}={getattr(stored, changed[0])!r}, "
            f"the flags say {getattr(config, changed[0])!r}; resume with the run's own flags"
        )
    checkpoint, notes = latest_readable_checkpoint(out)
    if checkpoint is None:
        if notes:
            raise SeqMnistError(f"--resume: no readable checkpoint in {out}: {'; '.join(notes)}")
        raise SeqMnistError(f"--resume: {out} has no checkpoint yet; start it again with --overwrite")
    for note in notes:
        print(f"--resume: {note}; resuming from step {checkpoint.step}", file=sys.stderr, flush=True)
    return checkpoint


def truncate_metrics(out: Path, step: int) -> None:
    """Drop metrics.jsonl lines logged after `step` (written by the killed run after its last checkpoint)."""
    path = out / "metrics.jsonl"
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        write_atomically(path, "".join(line + "\n" for line in kept).encode())


def resume_argv(argv: Sequence[str] | None, out: Path) -> list[str]:
    """The command line that continues this run: the same flags, plus --resume and --out."""
    args = [arg for arg in (sys.argv[1:] if argv is None else argv) if arg not in ("--overwrite", "--resume")]
    if "--out" not in args:
        args += ["--out", str(out)]
    return [*args, "--resume"]


def last_good_checkpoint(out: Path) -> str:
    """`last good checkpoint: step-....safetensors`, or that there is none yet, for a stop message."""
    kept = checkpoint_paths(out)
    return f"last good checkpoint: {kept[-1].name}" if kept else "no checkpoint yet"
