"""TensorFlow Datasets as a source: built offline from the bundled IDX files, it must hold the same examples."""

from __future__ import annotations

import hashlib
import importlib.util
import os

import numpy as np
import pytest

from common.data import load_dataset

HAVE_TFDS = all(importlib.util.find_spec(name) for name in ("tensorflow_datasets", "tensorflow"))


def example_keys(images: np.ndarray, labels: np.ndarray) -> list[str]:
    """One key per (image, label) pair, sorted: equal lists mean equal multisets of pairs."""
    pairs = zip(images, labels, strict=True)
    return sorted(hashlib.sha1(image.tobytes() + bytes([label])).hexdigest() for image, label in pairs)


@pytest.mark.tfds
def test_tfds_mnist_equals_the_idx_arrays_as_a_set_of_pairs(tmp_path):
    if not HAVE_TFDS:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI installs the [tfds] extra: tensorflow-datasets and tensorflow must import here")
        pytest.skip("tensorflow-datasets / tensorflow not installed (pip install -e '.[tfds]')")
    idx = load_dataset("mnist")
    tfds = load_dataset.__wrapped__("mnist", str(tmp_path / "tfds"), "tfds")
    assert tfds.train_images.shape == idx.train_images.shape and tfds.test_images.shape == idx.test_images.shape
    assert tfds.train_images.dtype == np.uint8 and tfds.train_labels.dtype == np.int64
    assert not np.array_equal(tfds.train_labels, idx.train_labels)  # TFDS keeps its own order ...
    assert example_keys(tfds.train_images, tfds.train_labels) == example_keys(idx.train_images, idx.train_labels)
    assert example_keys(tfds.test_images, tfds.test_labels) == example_keys(idx.test_images, idx.test_labels)
