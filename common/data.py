"""MNIST and Fashion-MNIST as NumPy arrays, from the first source that has them.

Images are uint8 `[N, 28, 28]`, labels int64 `[N]`. `images_to_row_sequences` turns images into what
the networks read: `<float>[N, 28, 28]` in [0, 1] (exactly `ToTensor`'s scaling, no normalisation), where
axis 1 is time (one image row per step) and axis 2 the 28 pixels of that row.

Sources, in the order `--data-source auto` tries them (`--data-dir` always wins):
  1. `--data-dir DIR`: the four standard IDX files, `.gz` or not, in DIR or in torchvision's
     `DIR/MNIST/raw` / `DIR/FashionMNIST/raw` layout;
  2. the MNIST copy bundled in `data/mnist/` (SHA-256 verified), or for Fashion-MNIST the IDX files of
     Debian's `dataset-fashion-mnist` package in /usr/share/datasets/fashion-mnist;
  3. TensorFlow Datasets (`--data-source tfds`), when installed;
  4. torchvision's `datasets.MNIST` / `FashionMNIST` (`--data-source torchvision`), when it imports.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import sys
from pathlib import Path
from typing import Literal

import numpy as np

from common.errors import SeqMnistError
from common.idx import SPLIT_FILES, check_split, find_idx_file, read_idx

DataSource = Literal["auto", "idx", "bundled", "tfds", "torchvision"]
DATA_SOURCES: tuple[str, ...] = ("auto", "idx", "bundled", "tfds", "torchvision")

TORCHVISION_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "data" / "mnist"
BUNDLED_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Both splits of one dataset, as loaded; `source` says where they came from."""

    name: str
    source: str
    train_images: np.ndarray  # uint8 [60000, 28, 28]
    train_labels: np.ndarray  # int64 [60000]
    test_images: np.ndarray  # uint8 [10000, 28, 28]
    test_labels: np.ndarray  # int64 [10000]


def images_to_row_sequences(images: np.ndarray, dtype: str = "float32") -> np.ndarray:
    """uint8 `[N, 28, 28]` -> `<dtype>[N, 28, 28]` in [0, 1]: row t of each image is time step t.

    Division (not multiplication by 1/255) so the values equal `ToTensor`'s bit for bit.
    """
    rows: np.ndarray = images.astype(dtype) / np.asarray(255, dtype=dtype)
    return rows


def idx_directory(data_dir: Path, dataset: str) -> Path:
    """The folder under `data_dir` that holds the IDX files: itself or torchvision's `<Name>/raw`."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise SeqMnistError(f"--data-dir {data_dir}: no such directory")
    candidates = [data_dir, data_dir / TORCHVISION_FOLDERS[dataset] / "raw", data_dir / "raw"]
    for directory in candidates:
        if find_idx_file(directory, SPLIT_FILES["train"][0]) is not None:
            return directory
    raise SeqMnistError(
        f"--data-dir {data_dir}: no {SPLIT_FILES['train'][0]}[.gz] in it or in "
        f"{TORCHVISION_FOLDERS[dataset]}/raw (expected the four standard IDX files)"
    )


def load_idx_directory(directory: Path, dataset: str, source: str) -> Dataset:
    """Read and check the four IDX files of `directory`."""
    arrays = {}
    for split, stems in SPLIT_FILES.items():
        paths = []
        for stem in stems:
            path = find_idx_file(directory, stem)
            if path is None:
                raise SeqMnistError(f"{directory}: missing {stem} (or {stem}.gz)")
            paths.append(path)
        images, labels = read_idx(paths[0], "images"), read_idx(paths[1], "labels")
        check_split(images, labels, f"{paths[0]} / {paths[1].name}")
        arrays[split] = (images, labels)
    return Dataset(dataset, source, *arrays["train"], *arrays["test"])


# --- sources --------------------------------------------------------------------------------------


def verify_bundled(directory: Path = BUNDLED_DIR) -> None:
    """Check the SHA-256 of every bundled MNIST file against the sums in data/mnist/README.md."""
    for name, expected in BUNDLED_SHA256.items():
        path = directory / name
        if not path.is_file():
            raise SeqMnistError(f"{path}: bundled MNIST file missing (expected it in the repository)")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected:
            raise SeqMnistError(f"{path}: SHA-256 {digest[:16]}... does not match the bundled {expected[:16]}...")


def load_bundled(dataset: str) -> Dataset:
    """The repository's own MNIST copy, or Debian's Fashion-MNIST package where installed."""
    if dataset == "mnist":
        verify_bundled()
        return load_idx_directory(BUNDLED_DIR, dataset, f"bundled ({BUNDLED_DIR})")
    if find_idx_file(DEBIAN_FASHION_DIR, SPLIT_FILES["train"][0]) is not None:
        return load_idx_directory(DEBIAN_FASHION_DIR, dataset, f"idx ({DEBIAN_FASHION_DIR})")
    raise SeqMnistError(
        "fashion_mnist is not bundled: pass --data-dir with its IDX files, install Debian's "
        "dataset-fashion-mnist, or use --data-source tfds"
    )


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


@functools.lru_cache(maxsize=4)
def load_dataset(dataset: str = "mnist", data_dir: str | None = None, source: str = "auto") -> Dataset:
    """Load `dataset` from the first source that has it (see the module docstring), once per process."""
    if source not in DATA_SOURCES:
        raise SeqMnistError(f"--data-source must be one of {', '.join(DATA_SOURCES)}, got {source!r}")
    if dataset not in TORCHVISION_FOLDERS:
        raise SeqMnistError(f"dataset must be one of {', '.join(TORCHVISION_FOLDERS)}, got {dataset!r}")
    directory = None if data_dir is None else Path(data_dir)
    if source == "tfds":
        return load_tfds(dataset, directory)
    if source == "torchvision":
        return load_torchvision(dataset, directory)
    if directory is not None:
        return load_idx_directory(idx_directory(directory, dataset), dataset, f"idx ({directory})")
    if source == "idx":
        raise SeqMnistError("--data-source idx needs --data-dir DIR holding the four IDX files")
    return load_bundled(dataset)
