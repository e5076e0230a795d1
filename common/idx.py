"""IDX files (MNIST's own format): read one, checking magic number, dimensions, length and labels."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from common.errors import SeqMnistError

IMAGE_SIDE = 28
IMAGES_MAGIC = 0x00000803  # 2051: unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # 2049: unsigned bytes, 1 dimension
NUM_CLASSES = 10

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path, kind: Literal["images", "labels"]) -> np.ndarray:
    """Read one IDX file (`.gz` or not), checking its magic number, dimensions and length."""
    path = Path(path)
    raw = _read_bytes(path)
    magic, dims = (IMAGES_MAGIC, 3) if kind == "images" else (LABELS_MAGIC, 1)
    header_size = 4 + 4 * dims
    if not raw:
        raise SeqMnistError(f"{path}: empty file (expected an IDX {kind} file)")
    if len(raw) < header_size:
        raise SeqMnistError(f"{path}: truncated IDX file ({len(raw)} bytes, header alone needs {header_size})")
    (found_magic,) = struct.unpack(">I", raw[:4])
    if found_magic != magic:
        raise SeqMnistError(
            f"{path}: not an IDX {kind} file (magic number {found_magic:#010x}, expected {magic:#010x})"
        )
    shape = struct.unpack(f">{dims}I", raw[4:header_size])
    if kind == "images" and shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise SeqMnistError(f"{path}: images are {shape[1]}x{shape[2]}, expected {IMAGE_SIDE}x{IMAGE_SIDE}")
    expected = header_size + int(np.prod(shape))
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "has trailing bytes"
        raise SeqMnistError(f"{path}: {problem}: {len(raw)} bytes, header {shape} needs {expected}")
    array = np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)
    return array.copy() if kind == "images" else array.astype(np.int64)


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise SeqMnistError(f"{path}: file not found")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise SeqMnistError(f"{path}: cannot read ({error})") from None


def check_split(images: np.ndarray, labels: np.ndarray, where: str) -> None:
    """Images and labels must agree in count, and labels lie in 0..9."""
    if len(images) != len(labels):
        raise SeqMnistError(f"{where}: {len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise SeqMnistError(f"{where}: labels must lie in 0..{NUM_CLASSES - 1}, found {labels.min()}..{labels.max()}")


def find_idx_file(directory: Path, stem: str) -> Path | None:
    """`directory/stem`, `directory/stem.gz`, or None."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None
