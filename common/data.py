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
from pathlib import Path
from typing import Literal

import numpy as np

from common.errors import ConfigError, SeqMnistError
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
Splits = tuple[str, ...]  # which of "train", "test" to read
BOTH: Splits = ("train", "test")


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


def idx_directory(data_dir: Path, dataset: str, splits: Splits = BOTH) -> Path:
    """The folder under `data_dir` that holds the IDX files: itself or torchvision's `<Name>/raw`."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ConfigError(f"--data-dir {data_dir}: no such directory")
    candidates = [data_dir, data_dir / TORCHVISION_FOLDERS[dataset] / "raw", data_dir / "raw"]
    wanted = [stem for split in splits for stem in SPLIT_FILES[split]]
    for directory in candidates:  # the folder holding any of them; a missing one is then named
        if any(find_idx_file(directory, stem) is not None for stem in wanted):
            return directory
    raise SeqMnistError(
        f"--data-dir {data_dir}: no {wanted[0]}[.gz] in it or in "
        f"{TORCHVISION_FOLDERS[dataset]}/raw (expected the standard IDX files)"
    )


EMPTY_SPLIT = (np.zeros((0, 28, 28), np.uint8), np.zeros((0,), np.int64))  # a split that was not asked for


def load_idx_directory(
    directory: Path, dataset: str, source: str, splits: tuple[str, ...] = ("train", "test")
) -> Dataset:
    """Read and check the IDX files of `directory` (the four, or only those of `splits`)."""
    arrays = {"train": EMPTY_SPLIT, "test": EMPTY_SPLIT}
    for split, stems in SPLIT_FILES.items():
        if split not in splits:
            continue
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


def verify_bundled(directory: Path = BUNDLED_DIR, splits: Splits = BOTH) -> None:
    """Check the SHA-256 of the bundled MNIST files (of `splits`) against the sums in data/mnist/README.md."""
    wanted = {f"{stem}.gz" for split in splits for stem in SPLIT_FILES[split]}
    for name, expected in BUNDLED_SHA256.items():
        if name not in wanted:
            continue
        path = directory / name
        if not path.is_file():
            raise SeqMnistError(f"{path}: bundled MNIST file missing (expected it in the repository)")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected:
            raise SeqMnistError(f"{path}: SHA-256 {digest[:16]}... does not match the bundled {expected[:16]}...")


def load_bundled(dataset: str, splits: Splits = BOTH) -> Dataset:
    """The repository's own MNIST copy, or Debian's Fashion-MNIST package where installed."""
    if dataset == "mnist":
        verify_bundled(splits=splits)
        return load_idx_directory(BUNDLED_DIR, dataset, f"bundled ({BUNDLED_DIR})", splits)
    if find_idx_file(DEBIAN_FASHION_DIR, SPLIT_FILES["test"][0]) is not None:
        return load_idx_directory(DEBIAN_FASHION_DIR, dataset, f"idx ({DEBIAN_FASHION_DIR})", splits)
    raise SeqMnistError(
        "fashion_mnist is not bundled: pass --data-dir with its IDX files, install Debian's "
        "dataset-fashion-mnist, or use --data-source tfds"
    )


@functools.lru_cache(maxsize=4)
def load_dataset(
    dataset: str = "mnist",
    data_dir: str | None = None,
    source: str = "auto",
    splits: tuple[str, ...] = ("train", "test"),
) -> Dataset:
    """Load `dataset` from the first source that has it (see the module docstring), once per process.

    `splits=("test",)` reads only the test files of an IDX source (an evaluation needs no training set);
    the training arrays are then empty.
    """
    if source not in DATA_SOURCES:
        raise ConfigError(f"--data-source must be one of {', '.join(DATA_SOURCES)}, got {source!r}")
    if dataset not in TORCHVISION_FOLDERS:
        raise SeqMnistError(f"dataset must be one of {', '.join(TORCHVISION_FOLDERS)}, got {dataset!r}")
    directory = None if data_dir is None else Path(data_dir)
    if source in ("tfds", "torchvision"):
        from common.sources import load_tfds, load_torchvision  # optional libraries, imported on request

        return (load_tfds if source == "tfds" else load_torchvision)(dataset, directory)
    if directory is not None:
        return load_idx_directory(idx_directory(directory, dataset, splits), dataset, f"idx ({directory})", splits)
    if source == "idx":
        raise ConfigError("--data-source idx needs --data-dir DIR holding the four IDX files")
    return load_bundled(dataset, splits)
