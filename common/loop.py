"""The training loop both frameworks share: chunks of steps between stops, metrics.jsonl, checkpoints, Ctrl-C."""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, NotRequired, TypedDict

import numpy as np

from common.checkpoint import Checkpoint, save_checkpoint
from common.config import Config, RunOptions
from common.console import step_bar
from common.data import Dataset
from common.errors import SeqMnistError
from common.rundir import last_good_checkpoint
from common.sampler import BatchSampler
from common.schedule import Schedule
from common.trainer import Trainer, evaluate_trainer


class MetricsRecord(TypedDict):
    """One line of metrics.jsonl: a log point of the run."""

    step: int  # global steps done
    epoch: int  # the epoch this chunk belongs to, counted from 1
    loss: float  # mean training loss over the steps since the last log point
    accuracy: float | None  # test accuracy in [0, 1] when this point evaluated, else None
    images_per_s: float  # training images per second over those steps (compilation excluded)
    test_loss: NotRequired[float]  # with accuracy
    eval_images: NotRequired[int]  # how many test images the accuracy is over
    elapsed: NotRequired[float]  # seconds since the run (or the resumed run) started


class TrainingFigures(TypedDict):
    """What the loop reports for summary.json."""

    steps: int
    epochs_completed: float
    train_loss_last_epoch: float | None  # mean training loss over the last epoch's worth of steps (or all)
    train_loss_last_log: float | None  # the last log point's `loss`: the mean over the steps it covers
    train_images_per_s: float | None  # steady state: compilation and the first chunk excluded
    train_seconds: float


class Interrupted(Exception):
    """Ctrl-C arrived; the run stopped at a chunk boundary after writing a checkpoint."""


class RunLog:
    """metrics.jsonl plus the console: one JSON object per log point, a progress bar or plain lines."""

    def __init__(self, out: Path, total_steps: int, label: str):
        self.path = out / "metrics.jsonl"
        self.start = time.perf_counter()
        self.bar = step_bar(total_steps, label)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def write(self, record: MetricsRecord, steps_done: int) -> None:
        record = {**record, "elapsed": round(self.elapsed(), 3)}
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")
        if self.bar is not None:
            self.bar.n = steps_done
            shown = {"loss": f"{record['loss']:.4f}", "img_s": f"{record['images_per_s']:.0f}"}
            if record["accuracy"] is not None:
                shown["acc"] = f"{record['accuracy']:.4f}"
            self.bar.set_postfix(shown)
        else:
            accuracy = "" if record.get("accuracy") is None else f" accuracy {record['accuracy']:.4f}"
            print(
                f"step {record['step']} epoch {record['epoch']} loss {record['loss']:.4f}{accuracy} "
                f"{record['images_per_s']:.0f} img/s",
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class StopRequest:
    """SIGINT sets a flag; the loop acts on it between chunks, where the state is whole."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: Callable[[int, FrameType | None], Any] | int | None = None

    def __enter__(self) -> StopRequest:
        def handler(signum: int, frame: FrameType | None) -> None:
            if self.requested:  # a second Ctrl-C: stop at once
                raise KeyboardInterrupt
            self.requested = True
            print("stopping after this chunk (Ctrl-C again to stop at once) ...", file=sys.stderr, flush=True)

        self.previous = signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self.previous)


def not_finite(what: str, step: int, out: Path) -> SeqMnistError:
    """The one-line error that stops a run whose loss or weights stopped being finite."""
    return SeqMnistError(
        f"{what} at step {step}; stopped without saving the weights ({last_good_checkpoint(out)}); "
        "try a lower --learning-rate"
    )


def write_checkpoint(out: Path, config: Config, trainer: Trainer, step: int) -> None:
    """Checkpoint the state after `step`, unless the weights are no longer finite (then keep the last good one)."""
    weights = trainer.canonical_weights()
    if not all(np.isfinite(array).all() for array in weights.values()):
        raise not_finite("weights became NaN or inf by", step, out)
    save_checkpoint(out, Checkpoint(step, weights, trainer.optimizer_state(), config))


def train(
    config: Config, options: RunOptions, trainer: Trainer, dataset: Dataset, out: Path, start_step: int = 0
) -> TrainingFigures:
    """Run the schedule from `start_step`; write metrics.jsonl and checkpoints; return the training figures."""
    sampler = BatchSampler(len(dataset.train_images), config.batch_size, config.seed)
    schedule = Schedule(
        sampler.steps_per_epoch,
        config.epochs,
        options.log_every,
        config.eval_every_steps,
        options.max_steps,
        options.checkpoint_every,
    )
    # the config's count, or the whole test set where it asks for more than the set holds (or for all: 0)
    eval_count = min(config.eval_images or len(dataset.test_images), len(dataset.test_images))
    log = RunLog(out, schedule.total_steps, f"{options.preset}")
    step, losses, timed_images, timed_seconds, first_chunk = start_step, [], 0, 0.0, True
    last_chunk = 0
    try:
        with StopRequest() as stop_request:
            while step < schedule.total_steps:
                epoch, in_epoch = divmod(step, schedule.steps_per_epoch)
                stop = schedule.next_stop(step)
                batches = sampler.batches(epoch, in_epoch, in_epoch + stop - step)
                began, compiling = time.perf_counter(), trainer.compile_seconds
                chunk_losses = np.asarray(trainer.train_steps(batches), dtype=np.float64)
                seconds = time.perf_counter() - began - (trainer.compile_seconds - compiling)
                images = sum(len(batch) for batch in batches)
                if not first_chunk or schedule.total_steps == stop:
                    timed_images, timed_seconds = timed_images + images, timed_seconds + seconds
                first_chunk = False
                if not np.isfinite(chunk_losses).all():
                    bad = int(np.argmax(~np.isfinite(chunk_losses)))
                    raise not_finite(f"loss became {chunk_losses[bad]}", step + bad + 1, out)
                losses.extend(chunk_losses.tolist())
                last_chunk = len(chunk_losses)
                step = stop
                record: MetricsRecord = {
                    "step": step,
                    "epoch": epoch + 1,
                    "loss": float(np.mean(chunk_losses)),
                    "accuracy": None,
                    "images_per_s": images / seconds if seconds > 0 else 0.0,
                }
                if schedule.epoch_ends(step):
                    record["test_loss"], record["accuracy"] = evaluate_trainer(
                        trainer, dataset, len(dataset.test_images)
                    )
                    record["eval_images"] = len(dataset.test_images)
                elif schedule.eval_due(step):
                    record["test_loss"], record["accuracy"] = evaluate_trainer(trainer, dataset, eval_count)
                    record["eval_images"] = eval_count
                log.write(record, step)
                if schedule.checkpoint_due(step) or stop_request.requested:
                    write_checkpoint(out, config, trainer, step)
                if stop_request.requested and step < schedule.total_steps:
                    raise Interrupted(f"stopped at step {step} after writing a checkpoint")
    finally:
        log.close()
    return {
        "steps": step,
        "epochs_completed": step / schedule.steps_per_epoch,
        "train_loss_last_epoch": float(np.mean(losses[-schedule.steps_per_epoch :])) if losses else None,
        "train_loss_last_log": float(np.mean(losses[-last_chunk:])) if losses and last_chunk else None,
        "train_images_per_s": timed_images / timed_seconds if timed_seconds > 0 else None,
        "train_seconds": log.elapsed(),
    }
