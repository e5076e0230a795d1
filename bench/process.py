"""Runners timed in a fresh process of their own: the tutorials' loop, and levers that are process-wide.

    python -m bench.process --runner "tutorial loop" --preset bilstm --steps 200 --data DIR

Why a fresh process. What a process freed before training decides whether torch's CPU RNNs run in glibc
malloc's slow or fast mode (`torch_impl/allocator.py`): timed inside the benchmark's process, the tutorial
loop would inherit what the trainers allocated. So it runs here and reads the training set as
torchvision's MNIST reads it: one uncompressed array (DIR/*.npy, written by the benchmark); reading
MNIST's 9.9 MB compressed file instead frees a block that by itself puts a process in the fast mode.
Some JAX settings (`jax_cpu_enable_async_dispatch`) are read once, when JAX starts its CPU client: a
lever made of them can only be timed in a process of its own.

The benchmark drives the child over stdin/stdout, one JSON line each way: after set-up and a warm-up
chunk it prints `{"ready": ...}`; each line it reads trains `steps` more steps and is answered with their
seconds (timed in the child: the pipe is not counted) and the optimizer's step count; end of input ends it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.levers import LEVERS
from common.cli import OneLineParser
from common.errors import SeqMnistError
from common.outputs import entry_point
from common.presets import PRESETS, get_preset
from torch_impl.allocator import tune_glibc_malloc

TUTORIAL_RUNNERS = {"tutorial loop": "default", "tutorial loop, malloc tuned": "tuned"}  # runner -> malloc
ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")


def in_own_process(name: str) -> bool:
    """Whether the runner `name` is timed in a fresh process (the tutorial loop; levers with process settings)."""
    return name in TUTORIAL_RUNNERS or (name in LEVERS and bool(LEVERS[name].process or LEVERS[name].xla_flags))


def child_environment(name: str) -> dict[str, str]:
    """The environment of a runner's process: a lever's XLA flags added to XLA_FLAGS (read when JAX starts)."""
    flags = LEVERS[name].xla_flags if name in LEVERS else ()
    if not flags:
        return dict(os.environ)
    return {**os.environ, "XLA_FLAGS": " ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip()}


def write_arrays(dataset: Any, folder: Path) -> Path:
    """The dataset as the child reads it: uncompressed .npy arrays (written once per folder)."""
    for name in ARRAYS:
        if not (folder / f"{name}.npy").is_file():
            np.save(folder / f"{name}.npy", getattr(dataset, name))
    return folder


class RunnerProcess:
    """A runner in a fresh process, set up and warmed up when made; `run` times `steps` more steps there.

    `ready` is the child's first line: its malloc set-up, warm-up and compile seconds, and the memory its
    set-up added.
    """

    def __init__(self, name: str, preset: str, steps: int, data: Path):
        self.command = ["-m", "bench.process", "--runner", name, "--preset", preset, "--steps", str(steps)]
        self.command += ["--data", str(data)]
        self.child = subprocess.Popen(
            [sys.executable, *self.command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_environment(name),
        )
        self.taken = 0
        self.ready = self._reply()

    def _reply(self) -> dict[str, Any]:
        line = self.child.stdout.readline() if self.child.stdout else ""
        if not line:
            status = self.child.wait()
            raise SeqMnistError(f"python {' '.join(self.command)}: the process ended (exit {status})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def run(self) -> float:
        if self.child.stdin is None:
            raise SeqMnistError(f"python {' '.join(self.command)}: already closed")
        self.child.stdin.write("run\n")
        self.child.stdin.flush()
        answer = self._reply()
        self.taken = answer["steps_taken"]
        return float(answer["seconds"])

    def steps_taken(self) -> int:
        return self.taken

    def close(self) -> None:
        if self.child.stdin:
            self.child.stdin.close()
        self.child.wait(timeout=60)


def rss_mb() -> float:
    """Resident memory of this process now (MiB)."""
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def set_up(
    name: str, preset: str, steps: int, data: Path
) -> tuple[Callable[[], float], Callable[[], int], Callable[[], float]]:
    """The runner's `run`, `steps_taken` and compile seconds so far, built in this (fresh) process."""
    config = get_preset(preset)
    if name in TUTORIAL_RUNNERS:  # only what a tutorial loads: freeing a test array would move malloc's threshold
        from bench.tutorial import tutorial_loop

        images, labels = np.load(data / "train_images.npy"), np.load(data / "train_labels.npy")
        return (*tutorial_loop(config, images, labels, steps), lambda: 0.0)
    import jax

    for key, value in LEVERS[name].process.items():  # before JAX starts its CPU client
        jax.config.update(key, value)
    from bench.runners import adam_steps, make_trainer, trainer_loop
    from common.data import Dataset

    dataset = Dataset("mnist", str(data), **{name: np.load(data / f"{name}.npy") for name in ARRAYS})
    trainer = make_trainer(name, config, dataset, "cpu")
    return trainer_loop(trainer, config, dataset, steps), lambda: adam_steps(trainer), lambda: trainer.compile_seconds


def serve(name: str, preset: str, steps: int, data: Path) -> None:
    """Set up, warm up, say so; then one timed chunk of `steps` per line of input."""
    malloc = "default" if TUTORIAL_RUNNERS.get(name) == "default" else tune_glibc_malloc()
    before, began = rss_mb(), time.perf_counter()
    run, steps_taken, compile_seconds = set_up(name, preset, steps, data)
    run()
    ready = {"ready": True, "malloc": malloc, "warmup_s": time.perf_counter() - began, "compile_s": compile_seconds()}
    print(json.dumps({**ready, "memory_mb": rss_mb() - before}), flush=True)
    for _ in sys.stdin:
        print(json.dumps({"seconds": run(), "steps_taken": steps_taken()}), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m bench.process", description=__doc__.splitlines()[0])
    runners = [*TUTORIAL_RUNNERS, *(name for name in LEVERS if in_own_process(name))]
    parser.add_argument("--runner", choices=runners, required=True, help="what to time")
    parser.add_argument("--preset", choices=tuple(PRESETS), required=True, help="the recipe")
    parser.add_argument("--steps", type=int, required=True, help="training steps per timed chunk")
    parser.add_argument("--data", type=Path, required=True, help="folder with the dataset as .npy (bench writes it)")
    args = parser.parse_args(argv)
    if args.steps <= 0:
        parser.error(f"--steps must be positive, got {args.steps}")
    for name in ARRAYS:
        if not (args.data / f"{name}.npy").is_file():
            parser.error(f"--data: expected {args.data / name}.npy (the benchmark writes it), not found")
    serve(args.runner, args.preset, args.steps, args.data)
    return 0


if __name__ == "__main__":
    sys.exit(entry_point(main))
