"""Data through other libraries, on request: TensorFlow Datasets (`--data-source tfds`) and torchvision."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from common.data import BUNDLED_DIR, Dataset
from common.errors import SeqMnistError


def load_tfds(dataset: str, data_dir: Path | None) -> Dataset:
    """Load through TensorFlow Datasets; offline, MNIST is prepared from the bundled IDX files.

    TFDS keeps its own order of examples (the same (image, label) pairs as the IDX files).
    """
    if importlib.util.find_spec("tensorflow_datasets") is None:
        raise SeqMnistError("--data-source tfds: tensorflow-datasets is not installed (pip install -e '.[tfds]')")
    import tensorflow_datasets as tfds

    if not sys.stderr.isatty():
        tfds.disable_progress_bar()
    manual_dir = str(BUNDLED_DIR) if dataset == "mnist" else None
    config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    try:
        splits = tfds.as_numpy(
            tfds.load(
                dataset,
                split=["train", "test"],
                batch_size=-1,
                as_supervised=True,
                data_dir=None if data_dir is None else str(data_dir),
                download_and_prepare_kwargs={"download_config": config},
            )
        )
    except Exception as error:  # TFDS raises many types (network, missing TF, ...): report in one line
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SeqMnistError(f"--data-source tfds: could not load {dataset}: {message}") from None
    (train_images, train_labels), (test_images, test_labels) = splits
    return Dataset(
        dataset,
        "tfds",
        train_images[..., 0].astype(np.uint8),
        train_labels.astype(np.int64),
        test_images[..., 0].astype(np.uint8),
        test_labels.astype(np.int64),
    )


def torchvision_importable() -> tuple[bool, str]:
    """(True, "") when torchvision imports, else (False, the one-line reason)."""
    if importlib.util.find_spec("torchvision") is None:
        return False, "torchvision is not installed"
    try:
        import torchvision  # noqa: F401  (imported only to see whether it imports)
    except Exception as error:  # a CUDA wheel beside a CPU torch raises RuntimeError on import
        return False, f"torchvision does not import: {str(error).strip().splitlines()[0]}"
    return True, ""


def load_torchvision(dataset: str, data_dir: Path | None) -> Dataset:
    """Load through torchvision's `datasets.MNIST` / `FashionMNIST` (downloads when networked)."""
    ok, reason = torchvision_importable()
    if not ok:
        raise SeqMnistError(f"--data-source torchvision: {reason}")
    from torchvision import datasets

    root = str(data_dir) if data_dir is not None else str(Path.home() / ".cache" / "torchvision")
    cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[dataset]
    try:
        train, test = cls(root, train=True, download=True), cls(root, train=False, download=True)
    except Exception as error:
        raise SeqMnistError(f"--data-source torchvision: could not load {dataset}: {error}") from None
    return Dataset(
        dataset,
        "torchvision",
        train.data.numpy().astype(np.uint8),
        train.targets.numpy().astype(np.int64),
        test.data.numpy().astype(np.uint8),
        test.targets.numpy().astype(np.int64),
    )
