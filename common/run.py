"""The training and evaluation drivers both frameworks share: flags, data, batches, logging, output files.

A framework plugs in a `Trainer` (below); everything else here is framework-free, so that
`torch_impl.train` and `jax_impl.train` run the same schedule and write the same files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from common import metrics
from common.checkpoint import Checkpoint, checkpoint_paths, latest_checkpoint, save_checkpoint
from common.cli import RunOptions, default_out_dir, fail, parse_train_args
from common.config import Config
from common.data import BatchSampler, Dataset, load_dataset
from common.errors import ConfigError, SeqMnistError
from common.weights import Weights, initial_weights, load_weights, save_weights, write_atomically

EVAL_BATCH = 2000
RUN_FILES = ("config.json", "metrics.jsonl", "model.safetensors", "summary.json")


class Trainer(Protocol):
    """What a framework provides: a model + optimizer on a device, fed by index batches."""

    device: str  # a description of where it runs, e.g. "cpu" or "cuda:0 (NVIDIA H100)"
    compile_seconds: float  # compilation so far, kept out of training time (stays 0 for eager torch)

    def train_steps(self, index_batches: Sequence[np.ndarray]) -> np.ndarray:
        """One optimizer step per batch of training-set indices; returns each step's mean loss."""

    def test_logits(self, count: int) -> np.ndarray:
        """`<float>[count, classes]` logits of the first `count` test images."""

    def canonical_weights(self) -> Weights:
        """The current parameters in the canonical (PyTorch state_dict) layout."""

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """Adam's moments in canonical layout (`adam.exp_avg.<name>`, `adam.exp_avg_sq.<name>`) and `adam.step`."""

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what `optimizer_state` returned, exactly."""

    def peak_device_mb(self) -> float | None:
        """Peak accelerator memory in MiB, or None on a CPU (where the run's peak RSS is the figure)."""


class Interrupted(Exception):
    """Ctrl-C arrived; the run stopped at a chunk boundary after writing a checkpoint."""


MakeTrainer = Callable[[Config, "Weights | None", Dataset, str], Trainer]


def show_progress() -> bool:
    """Progress bars on a terminal; plain lines when stdout is not a TTY or under CI=true."""
    return sys.stdout.isatty() and os.environ.get("CI", "").lower() not in ("1", "true", "yes")


def progress(items, description: str):
    """`items` with a tqdm bar on a terminal; the plain iterable under CI=true or when piped."""
    if not show_progress():
        return items
    from tqdm import tqdm  # noqa: PLC0415

    return tqdm(items, desc=description, dynamic_ncols=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare_out_dir(out: Path, overwrite: bool, resume: bool = False) -> None:
    """Refuse to write into a folder that already holds a run, unless --overwrite (or --resume)."""
    if out.exists() and not out.is_dir():
        raise SeqMnistError(f"--out {out} exists and is not a folder")
    existing = [name for name in RUN_FILES if (out / name).exists()] + [p.name for p in checkpoint_paths(out)]
    if resume:
        if not (out / "config.json").is_file():
            raise SeqMnistError(f"--out {out}: no run to resume there (no config.json)")
        return
    if existing and not overwrite:
        raise SeqMnistError(f"--out {out} already holds a run ({existing[0]}); pass --resume, --overwrite or another folder")
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        (out / "metrics.jsonl").unlink(missing_ok=True)
        for path in checkpoint_paths(out):
            path.unlink()


def starting_weights(config: Config, options: RunOptions) -> Weights | None:
    """Canonical initial weights for the seed, a given file's, or None for the framework's own init."""
    if options.init_weights is not None:
        weights, stored = load_weights(options.init_weights, config)
        return {name: array.astype(config.dtype) for name, array in weights.items()}
    if options.init == "native":
        return None
    return initial_weights(config)


@dataclasses.dataclass
class Schedule:
    """Where the run stops for logging and evaluation, in global steps."""

    steps_per_epoch: int
    epochs: int
    log_every: int
    eval_every: int
    max_steps: int | None
    checkpoint_every: int = 0

    @property
    def total_steps(self) -> int:
        total = self.steps_per_epoch * self.epochs
        return total if self.max_steps is None else min(total, self.max_steps)

    def next_stop(self, step: int) -> int:
        """The first global step after `step` where the loop must hand back control."""
        stops = [self.total_steps, (step // self.steps_per_epoch + 1) * self.steps_per_epoch,
                 (step // self.log_every + 1) * self.log_every]
        for every in (self.eval_every, self.checkpoint_every):
            if every:
                stops.append((step // every + 1) * every)
        return min(stops)

    def checkpoint_due(self, step: int) -> bool:
        return (step % self.steps_per_epoch == 0 or step == self.total_steps
                or bool(self.checkpoint_every and step % self.checkpoint_every == 0))


class RunLog:
    """metrics.jsonl plus the console: one JSON object per log point, a progress bar or plain lines."""

    def __init__(self, out: Path, total_steps: int, label: str):
        self.path = out / "metrics.jsonl"
        self.start = time.perf_counter()
        self.bar = None
        if show_progress():
            from tqdm import tqdm  # noqa: PLC0415

            self.bar = tqdm(total=total_steps, desc=label, unit="step", dynamic_ncols=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def write(self, record: dict, steps_done: int) -> None:
        record = {**record, "elapsed": round(self.elapsed(), 3)}
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")
        if self.bar is not None:
            self.bar.n = steps_done
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['images_per_s']:.0f}",
                                 **({"acc": f"{record['accuracy']:.4f}"} if record.get("accuracy") is not None else {}))
        else:
            accuracy = "" if record.get("accuracy") is None else f" accuracy {record['accuracy']:.4f}"
            print(f"step {record['step']} epoch {record['epoch']} loss {record['loss']:.4f}{accuracy} "
                  f"{record['images_per_s']:.0f} img/s", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def evaluate_trainer(trainer: Trainer, dataset: Dataset, count: int) -> tuple[float, float]:
    """(loss, accuracy) on the first `count` test images."""
    logits = trainer.test_logits(count)
    labels = dataset.test_labels[:count]
    return metrics.cross_entropy(logits, labels), metrics.accuracy(logits, labels)


class StopRequest:
    """SIGINT sets a flag; the loop acts on it between chunks, where the state is whole."""

    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self):
        def handler(signum, frame):
            if self.requested:  # a second Ctrl-C: stop at once
                raise KeyboardInterrupt
            self.requested = True
            print("stopping after this chunk (Ctrl-C again to stop at once) ...", file=sys.stderr, flush=True)

        self.previous = signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)


def write_checkpoint(out: Path, config: Config, trainer: Trainer, step: int) -> None:
    """Checkpoint the state after `step`, unless the weights are no longer finite (then keep the last good one)."""
    weights = trainer.canonical_weights()
    if not all(np.isfinite(array).all() for array in weights.values()):
        kept = checkpoint_paths(out)
        raise SeqMnistError(f"weights became NaN or inf by step {step}; stopped without saving them "
                            f"({'last good checkpoint: ' + kept[-1].name if kept else 'no checkpoint yet'}); "
                            "try a lower --learning-rate")
    save_checkpoint(out, Checkpoint(step, weights, trainer.optimizer_state(), config))


def train(config: Config, options: RunOptions, trainer: Trainer, dataset: Dataset, out: Path,
          start_step: int = 0) -> dict:
    """Run the schedule from `start_step`; write metrics.jsonl and checkpoints; return the training figures."""
    sampler = BatchSampler(len(dataset.train_images), config.batch_size, config.seed)
    schedule = Schedule(sampler.steps_per_epoch, config.epochs, options.log_every,
                        config.eval_every_steps, options.max_steps, options.checkpoint_every)
    eval_count = config.eval_images or len(dataset.test_images)
    log = RunLog(out, schedule.total_steps, f"{options.preset}")
    step, losses, timed_images, timed_seconds, first_chunk = start_step, [], 0, 0.0, True
    order: np.ndarray | None = None
    try:
        with StopRequest() as stop_request:
            while step < schedule.total_steps:
                epoch, in_epoch = divmod(step, schedule.steps_per_epoch)
                if in_epoch == 0 or order is None:
                    order = sampler.permutation(epoch)
                stop = schedule.next_stop(step)
                batches = [order[s * config.batch_size : (s + 1) * config.batch_size]
                           for s in range(in_epoch, in_epoch + stop - step)]
                began, compiling = time.perf_counter(), trainer.compile_seconds
                chunk_losses = np.asarray(trainer.train_steps(batches), dtype=np.float64)
                seconds = time.perf_counter() - began - (trainer.compile_seconds - compiling)
                images = sum(len(batch) for batch in batches)
                if not first_chunk or schedule.total_steps == stop:
                    timed_images, timed_seconds = timed_images + images, timed_seconds + seconds
                first_chunk = False
                if not np.isfinite(chunk_losses).all():
                    bad = step + int(np.argmax(~np.isfinite(chunk_losses)))
                    kept = checkpoint_paths(out)
                    raise SeqMnistError(
                        f"loss became {chunk_losses[bad - step]} at step {bad + 1}; stopped without saving it "
                        f"({'last good checkpoint: ' + kept[-1].name if kept else 'no checkpoint yet'}); "
                        "try a lower --learning-rate")
                losses.extend(chunk_losses.tolist())
                step = stop
                record = {"step": step, "epoch": epoch + 1, "loss": float(np.mean(chunk_losses)),
                          "accuracy": None, "images_per_s": images / seconds if seconds > 0 else 0.0}
                if step % schedule.steps_per_epoch == 0:
                    record["test_loss"], record["accuracy"] = evaluate_trainer(trainer, dataset, len(dataset.test_images))
                    record["eval_images"] = len(dataset.test_images)
                elif config.eval_every_steps and step % config.eval_every_steps == 0:
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
        "final_train_loss": float(np.mean(losses[-schedule.steps_per_epoch:])) if losses else None,
        "train_images_per_s": timed_images / timed_seconds if timed_seconds > 0 else None,
        "train_seconds": log.elapsed(),
    }


def resume_state(out: Path, config: Config) -> Checkpoint:
    """The newest checkpoint of the run in `out`, which must be of the same config as the flags."""
    stored = Config.from_json((out / "config.json").read_text(), str(out / "config.json"))
    if stored != config:
        changed = [f.name for f in dataclasses.fields(Config) if getattr(stored, f.name) != getattr(config, f.name)]
        raise SeqMnistError(f"--resume: the run in {out} has {changed[0]}={getattr(stored, changed[0])!r}, "
                            f"the flags say {getattr(config, changed[0])!r}; resume with the run's own flags")
    checkpoint = latest_checkpoint(out)
    if checkpoint is None:
        raise SeqMnistError(f"--resume: {out} has no checkpoint yet; start it again with --overwrite")
    return checkpoint


def truncate_metrics(out: Path, step: int) -> None:
    """Drop metrics.jsonl lines logged after `step` (written by the killed run after its last checkpoint)."""
    path = out / "metrics.jsonl"
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        write_atomically(path, "".join(line + "\n" for line in kept).encode())


def train_main(argv: Sequence[str] | None, *, framework: str, make_trainer: MakeTrainer,
               versions: Callable[[], dict]) -> int:
    """`python -m <framework>_impl.train`: parse, train, evaluate, write the four run files."""
    prog = f"python -m {framework}_impl.train"
    config, options = parse_train_args(argv, prog)
    if options.print_config:
        print(config.to_json())
        return 0
    started = time.perf_counter()
    out = Path(options.out) if options.out else default_out_dir(framework, options.preset)
    try:
        prepare_out_dir(out, options.overwrite, options.resume)
        checkpoint = resume_state(out, config) if options.resume else None
        weights = checkpoint.weights if checkpoint else starting_weights(config, options)
        dataset = load_dataset(config.dataset, options.data_dir, options.data_source)
        if checkpoint:
            truncate_metrics(out, checkpoint.step)
            (out / "summary.json").unlink(missing_ok=True)
        else:
            write_atomically(out / "config.json", (json.dumps(config.to_dict(), indent=2) + "\n").encode())
        trainer = make_trainer(config, weights, dataset, options.device)
        if checkpoint:
            trainer.load_optimizer_state(checkpoint.optimizer)
        figures = train(config, options, trainer, dataset, out, checkpoint.step if checkpoint else 0)
        test_loss, test_accuracy = evaluate_trainer(trainer, dataset, len(dataset.test_images))
        save_weights(out / "model.safetensors", trainer.canonical_weights(), config)
    except ConfigError as error:
        fail(prog, str(error), code=2)
    except SeqMnistError as error:
        fail(prog, str(error))
    except Interrupted as stopped:
        fail(prog, f"{stopped}; continue with: {prog} {' '.join(resume_argv(argv, out))}", code=130)
    except KeyboardInterrupt:
        fail(prog, f"interrupted; continue from the last checkpoint with --resume --out {out}", code=130)
    summary = {
        "framework": framework, "preset": options.preset, "test_accuracy": test_accuracy, "test_loss": test_loss,
        **figures, "compile_seconds": trainer.compile_seconds, "wall_seconds": time.perf_counter() - started,
        "device": trainer.device, "init": "file" if options.init_weights else options.init,
        "data_source": dataset.source, "peak_rss_mb": peak_rss_mb(),
        "peak_device_mb": trainer.peak_device_mb(),
        "versions": {"python": platform.python_version(), "numpy": np.__version__, **versions()},
        "config": config.to_dict(),
    }
    write_atomically(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    print(f"{framework} {options.preset}: test accuracy {test_accuracy:.4f} (loss {test_loss:.4f}) after "
          f"{figures['steps']} steps, {summary['wall_seconds']:.1f} s on {trainer.device}; wrote {out}")
    return 0


def resume_argv(argv: Sequence[str] | None, out: Path) -> list[str]:
    """The command line that continues this run: the same flags, plus --resume and --out."""
    args = [arg for arg in (sys.argv[1:] if argv is None else argv) if arg not in ("--overwrite", "--resume")]
    if "--out" not in args:
        args += ["--out", str(out)]
    return [*args, "--resume"]


PredictLogits = Callable[[Config, Weights, np.ndarray, str], np.ndarray]
ReadWeights = Callable[[str, "Config | None"], "tuple[Weights, Config]"]


def evaluate_main(argv: Sequence[str] | None, *, framework: str, read_weights: ReadWeights,
                  predict_logits: PredictLogits) -> int:
    """`python -m <framework>_impl.evaluate --weights FILE`: accuracy and loss on the test set."""
    from common.cli import build_evaluate_parser  # noqa: PLC0415
    from common.presets import get_preset  # noqa: PLC0415

    prog = f"python -m {framework}_impl.evaluate"
    parser = build_evaluate_parser(prog)
    namespace = parser.parse_args(argv)
    try:
        preset = get_preset(namespace.preset) if namespace.preset else None
        weights, config = read_weights(namespace.weights, preset)
        overrides = {name: getattr(namespace, name) for name in ("dataset", "dtype") if hasattr(namespace, name)}
        config = dataclasses.replace(config, **overrides)
        weights = {name: array.astype(config.dtype) for name, array in weights.items()}
        dataset = load_dataset(config.dataset, namespace.data_dir, namespace.data_source)
        count = min(namespace.limit or len(dataset.test_images), len(dataset.test_images))
        from common.data import images_to_row_sequences  # noqa: PLC0415

        rows = images_to_row_sequences(dataset.test_images[:count], config.dtype)
        logits = predict_logits(config, weights, rows, namespace.device)
    except ConfigError as error:
        fail(prog, str(error), code=2)
    except SeqMnistError as error:
        fail(prog, str(error))
    labels = dataset.test_labels[:count]
    result = {"accuracy": metrics.accuracy(logits, labels), "loss": metrics.cross_entropy(logits, labels),
              "n": int(count), "weights": str(namespace.weights), "dataset": config.dataset,
              "framework": framework}
    if namespace.json:
        print(json.dumps({**result, "predictions": metrics.predictions(logits).tolist()}))
    else:
        print(f"{framework} {namespace.weights}: accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f} "
              f"on {count} {config.dataset} test images")
    return 0
