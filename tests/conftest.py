"""Shared fixtures: real MNIST rows from the bundled copy, IDX files written on the spot, a CLI runner."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from common.data import images_to_row_sequences, load_dataset
from common.idx import IMAGES_MAGIC, LABELS_MAGIC
from common.presets import PRESETS

ROOT = Path(__file__).resolve().parent.parent
CACHE_KEY = pytest.StashKey[str]()
STARTED_KEY = pytest.StashKey[float]()
SESSION_CACHE = "SEQMNIST_TEST_SESSION_CACHE"  # the session's cache folder, for pytest-xdist's workers
_durations: dict[str, float] = {}  # test id -> seconds, for the summary at the end


def pytest_configure(config):
    """One JAX compilation cache for the whole session (jax_impl/cache.py), new and empty, removed at the end:
    every process the tests start compiles each program once, and no test reads a user's own cache. Set
    before any test module imports JAX, which reads these variables as it starts."""
    config.stash[STARTED_KEY] = time.monotonic()
    if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get(SESSION_CACHE):
        # a pytest-xdist worker: it shares the controller's folder (inherited), which the controller removes
        os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ[SESSION_CACHE]
        share_the_cores(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
        return
    folder = tempfile.mkdtemp(prefix="seqmnist-test-jax-cache-")
    config.stash[CACHE_KEY] = folder
    os.environ[SESSION_CACHE] = folder
    os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.2"  # jax_impl.cache.MIN_COMPILE_SECONDS
    os.environ.pop("SEQMNIST_JAX_CACHE", None)


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the platform says, as on Linux; all of them otherwise)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def share_the_cores(workers: int) -> None:
    """Each worker's share of the cores for torch's and XLA's thread pools, for it and the processes it starts.
    Two workers on two cores each with a pool of two wait on each other's threads; the suite's models are small,
    and one thread runs them about as fast as two."""
    threads = max(1, usable_cores() // max(1, workers))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    if threads == 1:
        os.environ["XLA_FLAGS"] = " ".join(
            [os.environ.get("XLA_FLAGS", ""), "--xla_cpu_multi_thread_eigen=false"]
        ).strip()
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (the default, pyproject.toml): one worker per core, at most four (each holds torch and JAX)."""
    return max(1, min(usable_cores(), 4))


# The longest files first, so that pytest-xdist (`--dist loadfile`: a file's tests stay in one process and share
# its fixtures) does not start one of them last, while the other worker idles. pyproject.toml's
# `--no-loadscope-reorder` keeps this order (pytest-xdist's own puts the files with the most tests first). In
# the order of their worker-seconds in a default-tier run (docs/performance.md, issue 38's seventh round); the
# rest keep their order.
LONGEST_FIRST = (
    "test_parity",
    "test_bench",
    "test_zoo",
    "test_resume",
    "test_backward",
    "test_train",
    "test_stock_ports",
    "test_preset_ports",
    "test_infer",
    "test_examples",
    "test_tools",
    "test_cache",
    "test_jax_model",
    "test_coverage",
    "test_recurrence",
    "test_gpu_report",
    "test_streaming",
    "test_units",
    "test_tfds",
    "test_forwards",
    "test_precision",
    "test_zoo_traps",
)


def pytest_unconfigure(config):
    if CACHE_KEY not in config.stash:  # a worker: the controller owns the folders
        return
    shutil.rmtree(config.stash[CACHE_KEY], ignore_errors=True)
    for folder in Path(config.stash[CACHE_KEY]).parent.glob(Path(config.stash[CACHE_KEY]).name + "-mnist*"):
        shutil.rmtree(folder, ignore_errors=True)  # small_mnist_dir's, one per worker


def pytest_runtest_logreport(report):
    """Each test's setup, call and teardown seconds, added up for the summary below."""
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter, config):
    """The guard: the tier's wall time and its five slowest tests, at the end of every run, so that a slow
    test added later is seen at once. The default tier aims at 8 minutes on the project's 2-core machine
    (docs/performance.md#the-test-suite has what it takes); `--run-slow` adds the full-size repetitions."""
    if not _durations:
        return
    tier = "--run-slow" if config.getoption("--run-slow") else "default"
    elapsed = time.monotonic() - config.stash[STARTED_KEY]
    terminalreporter.write_sep("-", f"{tier} tier: {elapsed:.0f} s wall, {len(_durations)} tests; the five slowest")
    for nodeid, seconds in sorted(_durations.items(), key=lambda item: -item[1])[:5]:
        terminalreporter.write_line(f"{seconds:7.1f} s  {nodeid}")


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run the long checks (full trainings)")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.stem
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order inside each file and among the rest is kept
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def shrunk(monkeypatch, preset: str, hidden_size: int = 32) -> str:
    """`preset` at `hidden_size` for one test (`common.presets.PRESETS` patched, so every command and check that
    reads the preset sees it): its shape (cell, layers, directions) and recipe kept. For a default-tier test whose
    assertion does not need the width; the preset at its own size runs under `--run-slow`."""
    monkeypatch.setitem(PRESETS, preset, dataclasses.replace(PRESETS[preset], hidden_size=hidden_size))
    return preset


def preset_tiers(narrow: dict[str, int], presets=PRESETS, slow_only: tuple[str, ...] = ()) -> list:
    """Parameters `(preset, hidden)`: in the default tier each of `presets` (not in `slow_only`), those in `narrow`
    at that hidden size (`[rnn-hidden32]`, hidden None: its own); under --run-slow `slow_only` and the narrow ones
    at their own size. A test taking them calls `shrunk` when hidden is not None."""
    default = [
        pytest.param(p, narrow.get(p), id=f"{p}-hidden{narrow[p]}" if p in narrow else p)
        for p in presets
        if p not in slow_only
    ]
    return default + [pytest.param(p, None, id=p, marks=pytest.mark.slow) for p in (*slow_only, *narrow)]


def idx_bytes(array: np.ndarray, kind: str) -> bytes:
    """An IDX file's bytes for uint8 images `[N, 28, 28]` or labels `[N]`."""
    magic = IMAGES_MAGIC if kind == "images" else LABELS_MAGIC
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.asarray(array, dtype=np.uint8).tobytes()


def write_idx_dir(directory: Path, train: tuple, test: tuple, compress: bool = True) -> Path:
    """Write the four standard IDX files (gzip'd or not) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte": idx_bytes(train[0], "images"),
        "train-labels-idx1-ubyte": idx_bytes(train[1], "labels"),
        "t10k-images-idx3-ubyte": idx_bytes(test[0], "images"),
        "t10k-labels-idx1-ubyte": idx_bytes(test[1], "labels"),
    }
    for name, payload in files.items():
        if compress:
            (directory / f"{name}.gz").write_bytes(gzip.compress(payload, mtime=0))
        else:
            (directory / name).write_bytes(payload)
    return directory


def small_split(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), rng.integers(0, 10, count).astype(np.int64)


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    """A folder with small, valid, gzip'd IDX files: 300 training and 100 test images."""
    return write_idx_dir(tmp_path / "idx", small_split(300, 0), small_split(100, 1))


@functools.cache
def small_mnist_dir() -> Path:
    """Real MNIST cut to its first 4,000 training and 1,000 test images, as gzip'd IDX files, written once per
    session beside the session's cache folder (removed with it at the end). For the trainers' command-line
    tests whose assertion is about the process (resume, determinism), not the data: each run then loads and
    evaluates a fraction of the set."""
    dataset = load_dataset("mnist")
    folder = Path(os.environ[SESSION_CACHE] + "-mnist-" + os.environ.get("PYTEST_XDIST_WORKER", "main"))
    return write_idx_dir(
        folder,
        (dataset.train_images[:4000], dataset.train_labels[:4000]),
        (dataset.test_images[:1000], dataset.test_labels[:1000]),
    )


@pytest.fixture(scope="session")
def mnist():
    return load_dataset("mnist")


@pytest.fixture(scope="session")
def mnist_rows(mnist) -> np.ndarray:
    """The first 32 real MNIST test images as float32 row sequences `[32, 28, 28]`."""
    return images_to_row_sequences(mnist.test_images[:32])


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m ARGS...` from the repository root as a user would, under CI=true."""
    env = {**os.environ, "CI": "true", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    """Non-zero exit `code`, no traceback, exactly one line on stderr containing every fragment."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def run_main(main, argv: list[str], capsys) -> tuple[int, str, str]:
    """Call a CLI's `main(argv)` in this process: (exit code, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_module(module: str, argv: list[str], capsys) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGV...` run in this process, by its `main(argv)`, as `run_cli`'s result: for a test
    about a command's output and files, not about the process (which costs an interpreter and torch's and JAX's
    imports per call)."""
    import importlib

    code, out, err = run_main(importlib.import_module(module).main, argv, capsys)
    return subprocess.CompletedProcess([module, *argv], code, out, err)


def assert_one_line(code: int, err: str, expected_code: int, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == expected_code, (code, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def matmul_flops(jaxpr, inside_scan_only: bool = False, _in_scan: bool = False) -> int:
    """Multiply-add FLOPs (2 per product) of every `dot_general` in a JAX program, loops counted per iteration.

    An independent count of a model's matmul work, read from what JAX will run rather than from a formula.
    `inside_scan_only`: count only the products inside a `lax.scan` body (the time loop).
    """
    from jax.extend.core import ClosedJaxpr, Jaxpr

    total = 0
    for equation in jaxpr.eqns:
        if equation.primitive.name == "dot_general" and (_in_scan or not inside_scan_only):
            (contracting, _), _ = equation.params["dimension_numbers"]
            left = equation.invars[0].aval.shape
            total += 2 * int(np.prod(equation.outvars[0].aval.shape)) * int(np.prod([left[d] for d in contracting]))
        repeats = equation.params.get("length", 1) if equation.primitive.name == "scan" else 1
        for value in equation.params.values():
            for inner in value if isinstance(value, (tuple, list)) else (value,):
                inner = inner.jaxpr if isinstance(inner, ClosedJaxpr) else inner
                if isinstance(inner, Jaxpr):
                    total += repeats * matmul_flops(
                        inner, inside_scan_only, _in_scan or equation.primitive.name == "scan"
                    )
    return total
