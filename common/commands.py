"""The `train` and `evaluate` commands both frameworks share: each `main` plugs in its framework's parts."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common import metrics
from common.cli import build_evaluate_parser, cli_errors, fail, parse_train_args
from common.config import Config, RunOptions
from common.data import images_to_row_sequences, load_dataset
from common.loop import Interrupted, TrainingFigures, train
from common.outputs import write_atomically
from common.presets import get_preset
from common.resources import peak_rss_mb
from common.rundir import (
    check_out_dir,
    clear_old_run,
    default_out_dir,
    locked_out_dir,
    resume_argv,
    resume_state,
    truncate_metrics,
)
from common.trainer import MakeTrainer, evaluate_trainer
from common.weights import Weights, initial_weights, load_weights, save_weights

Versions = Callable[[], dict[str, str | int | None]]  # the framework's library versions, for summary.json
PredictLogits = Callable[[Config, Weights, np.ndarray, str], np.ndarray]
ReadWeights = Callable[[str, "Config | None"], "tuple[Weights, Config]"]


class Summary(TrainingFigures):
    """summary.json: what a finished run reports (docs/run-files.md documents every field)."""

    framework: str  # "torch" or "jax"
    preset: str
    test_accuracy: float  # in [0, 1], on the whole test set, after the last step
    test_loss: float  # mean cross-entropy on the whole test set
    compile_seconds: float  # compilation, kept out of train_images_per_s (0 for eager torch)
    wall_seconds: float  # the whole command: data, compilation, training, evaluations, files
    device: str  # e.g. "cpu (2 threads)", "cpu (XLA, 2 cores)", "cuda (NVIDIA H100 80GB HBM3)"
    init: str  # canonical, native or file
    data_source: str  # where the data came from, e.g. "bundled (.../data/mnist)"
    peak_rss_mb: float  # the process's peak resident memory
    peak_device_mb: float | None  # peak accelerator memory; None on a CPU
    versions: dict[str, str | int | None]  # python, numpy and the framework's libraries
    config: dict[str, Any]  # the resolved Config, as config.json holds it


def starting_weights(config: Config, options: RunOptions) -> Weights | None:
    """Canonical initial weights for the seed, a given file's, or None for the framework's own init."""
    if options.init_weights is not None:
        weights, _ = load_weights(options.init_weights, config)
        return {name: array.astype(config.dtype) for name, array in weights.items()}
    if options.init == "native":
        return None
    return initial_weights(config)


def train_main(
    argv: Sequence[str] | None,
    *,
    framework: str,
    make_trainer: MakeTrainer,
    versions: Callable[[], dict[str, str | int | None]],
) -> int:
    """`python -m <framework>_impl.train`: parse, train, evaluate, write the four run files."""
    prog = f"python -m {framework}_impl.train"
    config, options = parse_train_args(argv, prog, framework)
    if options.print_config:
        print(config.to_json())
        return 0
    started = time.perf_counter()
    out = Path(options.out) if options.out else default_out_dir(framework, options.preset)
    try:
        with cli_errors(prog), contextlib.ExitStack() as stack:
            check_out_dir(out, options.overwrite, options.resume)
            checkpoint = None
            if options.resume:  # the folder is there: hold it before reading its checkpoints
                stack.enter_context(locked_out_dir(out))
                checkpoint = resume_state(out, config)
            weights = checkpoint.weights if checkpoint else starting_weights(config, options)
            dataset = load_dataset(config.dataset, options.data_dir, options.data_source)
            trainer = make_trainer(config, weights, dataset, options.device)
            if not checkpoint:  # everything the run needs is loaded: only now does it make its folder
                stack.enter_context(locked_out_dir(out))
                check_out_dir(out, options.overwrite)  # again, holding the lock: another run may have been quicker
                if options.overwrite:
                    clear_old_run(out)
            if checkpoint:
                truncate_metrics(out, checkpoint.step)
                (out / "summary.json").unlink(missing_ok=True)
                trainer.load_optimizer_state(checkpoint.optimizer)
            else:
                write_atomically(out / "config.json", (json.dumps(config.to_dict(), indent=2) + "\n").encode())
            figures = train(config, options, trainer, dataset, out, checkpoint.step if checkpoint else 0)
            test_loss, test_accuracy = evaluate_trainer(trainer, dataset, len(dataset.test_images))
            save_weights(out / "model.safetensors", trainer.canonical_weights(), config)
            summary: Summary = {
                "framework": framework,
                "preset": options.preset,
                "test_accuracy": test_accuracy,
                "test_loss": test_loss,
                **figures,
                "compile_seconds": trainer.compile_seconds,
                "wall_seconds": time.perf_counter() - started,
                "device": trainer.device,
                "init": "file" if options.init_weights else options.init,
                "data_source": dataset.source,
                "peak_rss_mb": peak_rss_mb(),
                "peak_device_mb": trainer.peak_device_mb(),
                "versions": {"python": platform.python_version(), "numpy": np.__version__, **versions()},
                "config": config.to_dict(),
            }
            write_atomically(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    except Interrupted as stopped:
        fail(prog, f"{stopped}; continue with: {prog} {' '.join(resume_argv(argv, out))}", code=130)
    except KeyboardInterrupt:
        fail(prog, f"interrupted; continue from the last checkpoint with --resume --out {out}", code=130)
    print(
        f"{framework} {options.preset}: test accuracy {test_accuracy:.4f} (loss {test_loss:.4f}) after "
        f"{figures['steps']} steps, {summary['wall_seconds']:.1f} s on {trainer.device}; wrote {out}"
    )
    return 0


def evaluate_main(
    argv: Sequence[str] | None, *, framework: str, read_weights: ReadWeights, predict_logits: PredictLogits
) -> int:
    """`python -m <framework>_impl.evaluate --weights FILE`: accuracy and loss on the test set."""
    prog = f"python -m {framework}_impl.evaluate"
    namespace = build_evaluate_parser(prog, framework).parse_args(argv)
    with cli_errors(prog):
        preset = get_preset(namespace.preset) if namespace.preset else None
        weights, config = read_weights(namespace.weights, preset)
        overrides = {name: getattr(namespace, name) for name in ("dataset", "dtype") if hasattr(namespace, name)}
        config = dataclasses.replace(config, **overrides)
        weights = {name: array.astype(config.dtype) for name, array in weights.items()}
        dataset = load_dataset(config.dataset, namespace.data_dir, namespace.data_source, splits=("test",))
        count = min(namespace.limit or len(dataset.test_images), len(dataset.test_images))
        rows = images_to_row_sequences(dataset.test_images[:count], config.dtype)
        logits = predict_logits(config, weights, rows, namespace.device)
    labels = dataset.test_labels[:count]
    result = {
        "accuracy": metrics.accuracy(logits, labels),
        "loss": metrics.cross_entropy(logits, labels),
        "n": int(count),
        "weights": str(namespace.weights),
        "dataset": config.dataset,
        "framework": framework,
    }
    if namespace.json:
        print(json.dumps({**result, "predictions": metrics.predictions(logits).tolist()}))
    else:
        print(
            f"{framework} {namespace.weights}: accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f} "
            f"on {count} {config.dataset} test images"
        )
    return 0
