"""The runners the benchmark times: the tutorials' own loop and both trainers (with any lever's options).

All run round-robin over repetitions (so that machine noise hits them alike), each timed over the same
number of steps after a warm-up chunk (and, for JAX, after compilation). The trainers run in this
process; the tutorial loop runs in fresh processes of its own (`bench/process.py`), as a user's script
does, once with glibc malloc as it starts and once set up as the torch trainer sets it up; so does a
lever whose JAX settings are read once per process.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.bound import train_flops_per_image
from bench.levers import LEVERS
from bench.process import TUTORIAL_RUNNERS, RunnerProcess, in_own_process, rss_mb, write_arrays
from common.console import progress
from common.errors import ConfigError
from common.presets import get_preset
from common.resources import peak_rss_mb
from common.sampler import BatchSampler
from common.trainer import Trainer
from common.weights import initial_weights


def trainer_loop(trainer, config, dataset, steps: int) -> Callable[[], float]:
    """A project trainer fed the shared sampler's full batches, `steps` at a time; returns seconds without compiling."""
    sampler = BatchSampler(len(dataset.train_images), config.batch_size, config.seed)
    full = [batch for batch in sampler.batches(0) if len(batch) == config.batch_size]
    position = 0

    def run() -> float:
        nonlocal position
        if position + steps > len(full):
            position = 0
        batches = full[position : position + steps]
        position += steps
        compiling, began = trainer.compile_seconds, time.perf_counter()
        trainer.train_steps(batches)
        return time.perf_counter() - began - (trainer.compile_seconds - compiling)

    return run


def eval_images_per_s(trainer, count: int = 10000) -> float:
    trainer.test_logits(count)  # warm-up / compile
    began = time.perf_counter()
    trainer.test_logits(count)
    return count / (time.perf_counter() - began)


@dataclasses.dataclass
class Runner:
    name: str
    framework: str  # "torch" or "jax"
    run: Callable[[], float]  # trains `steps` more steps, returns their seconds (compilation excluded)
    steps_taken: Callable[[], int]  # optimizer steps taken so far, read from the optimizer itself
    trainer: Trainer | None = None  # None for the tutorial loop
    memory_mb: float = 0.0  # resident memory its setup and warm-up added
    warmup_s: float = 0.0
    close: Callable[[], None] = lambda: None  # ends the tutorial loop's process
    malloc: str | None = None  # its own process's malloc set-up, in words (None: it runs in this process)
    compile_s: float | None = None  # its own process's compile seconds (None: read from the trainer)


def runner_framework(name: str) -> str:
    """ "torch" or "jax": whose trainer the runner `name` times (the tutorial loop is torch)."""
    return (
        LEVERS[name].framework
        if name in LEVERS
        else "torch"
        if name in TUTORIAL_RUNNERS
        else {"torch trainer": "torch", "jax trainer": "jax"}[name]
    )


def make_trainer(name: str, config, dataset, device: str) -> Trainer:
    """A project trainer with its defaults ("torch trainer", "jax trainer") or with a lever's options."""
    framework = runner_framework(name)
    options = LEVERS[name].options if name in LEVERS else {}
    if framework == "torch":
        from torch_impl.train import TorchTrainer, TrainOptions

        return TorchTrainer(config, initial_weights(config), dataset, device, TrainOptions(**options))
    from jax_impl.train import JaxTrainer
    from jax_impl.train import TrainOptions as JaxOptions

    return JaxTrainer(config, initial_weights(config), dataset, device, JaxOptions(**options))


def adam_steps(trainer: Trainer) -> int:
    """How many steps the trainer's Adam has taken (its own count, as a checkpoint stores it)."""
    return int(trainer.optimizer_state()["adam.step"][0])


def make_runners(
    preset: str, config, dataset, steps: int, device: str, levers: Sequence[str], tutorial: bool, scratch: Path
) -> list[Runner]:
    """The tutorial loop in fresh processes (CPU; default and tuned malloc), both trainers, and any levers;
    each set up and warmed up, memory noted."""
    names = (list(TUTORIAL_RUNNERS) if tutorial else []) + ["torch trainer", "jax trainer", *levers]
    if config != get_preset(preset) and any(in_own_process(name) for name in names):
        raise ConfigError(f"{preset}: a runner in its own process runs the preset, not a changed config")
    runners = []
    for name in names:
        before, began = rss_mb(), time.perf_counter()
        if in_own_process(name):
            child = RunnerProcess(name, preset, steps, write_arrays(dataset, scratch))
            ready = child.ready
            runners.append(
                Runner(
                    name,
                    runner_framework(name),
                    child.run,
                    child.steps_taken,
                    memory_mb=ready["memory_mb"],
                    warmup_s=ready["warmup_s"],
                    close=child.close,
                    malloc=ready["malloc"],
                    compile_s=ready["compile_s"],
                )
            )
            continue
        try:
            trainer = make_trainer(name, config, dataset, device)
        except ConfigError as error:  # a lever that does not apply to this model (a cuDNN LSTM on a tanh RNN)
            print(f"{name}: skipped for this model ({error})")
            continue
        runner = Runner(
            name,
            runner_framework(name),
            trainer_loop(trainer, config, dataset, steps),
            functools.partial(adam_steps, trainer),
            trainer,
        )
        runner.run()  # warm-up chunk (and compilation) before any timing
        runner.warmup_s, runner.memory_mb = time.perf_counter() - began, rss_mb() - before
        runners.append(runner)
    return runners


def bench_preset(
    preset: str,
    dataset,
    steps: int,
    reps: int,
    device: str,
    levers: Sequence[str] = (),
    bound: float | None = None,
    config=None,
    tutorial: bool = True,
    evaluate: bool = True,
) -> list[dict]:
    """Time every runner round-robin on `preset` (or `config`); one row per runner and one for the process.

    `bound` is the matmul throughput (GFLOP/s) each row's training FLOPs are compared with. `evaluate`: also
    time each trainer's evaluation (the `eval_images_per_s` figure; None without it).
    """
    config = config or get_preset(preset)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-tutorial-") as scratch:
        runners = make_runners(
            preset, config, dataset, steps, device, levers, tutorial and device == "cpu", Path(scratch)
        )
    times: dict[str, list[float]] = {runner.name: [] for runner in runners}
    try:
        for _ in progress(range(reps), f"bench {preset}"):
            for runner in runners:
                times[runner.name].append(runner.run())
    finally:
        for runner in runners:
            runner.close()
    images = steps * config.batch_size
    flops = train_flops_per_image(config)
    baseline = statistics.median(images / t for t in times["tutorial loop"]) if "tutorial loop" in times else None
    results = []
    for runner in runners:
        rates = [images / t for t in times[runner.name]]
        median = statistics.median(rates)
        trainer = runner.trainer
        results.append(
            {
                "preset": preset,
                "device": device,
                "runner": runner.name,
                "framework": runner.framework,
                "batch_size": config.batch_size,
                "hidden_size": config.hidden_size,
                "images_per_s": median,
                "min": min(rates),
                "max": max(rates),
                "warmup_s": runner.warmup_s,
                "compile_s": getattr(trainer, "compile_seconds", 0.0) if runner.compile_s is None else runner.compile_s,
                "eval_images_per_s": eval_images_per_s(trainer) if trainer is not None and evaluate else None,
                "vs_tutorial": median / baseline if baseline else None,
                "memory_mb": runner.memory_mb,
                "malloc": runner.malloc,
                "steps_taken": runner.steps_taken(),
                "peak_device_mb": trainer.peak_device_mb() if trainer is not None else None,
                "train_gflops": median * flops / 1e9,
                "matmul_bound_gflops": bound,
                "bound_share": median * flops / 1e9 / bound if bound else None,
            }
        )
    results.append(
        {
            "preset": preset,
            "device": device,
            "runner": "(process)",
            "peak_rss_mb": peak_rss_mb(),
            "seconds": time.perf_counter() - began,
        }
    )
    return results
