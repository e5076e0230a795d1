"""TensorFlow Datasets as a source: built offline from the bundled IDX files, it must hold the same examples."""

from __future__ import annotations

import functools
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


# The default tier has TFDS prepare the first 2,000 examples of each split (its own testing switch,
# `DownloadConfig(max_examples_per_split=...)`: preparing is PNG-encoding every image, most of the test's time);
# --run-slow prepares all 70,000. The same loader either way; a label or image mixed up fails both.
@pytest.mark.tfds
@pytest.mark.parametrize("examples", [2000, pytest.param(None, marks=pytest.mark.slow)], ids=["2000", "all"])
def test_tfds_mnist_equals_the_idx_arrays_as_a_set_of_pairs(tmp_path, monkeypatch, examples):
    if not HAVE_TFDS:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI installs the [tfds] extra: tensorflow-datasets and tensorflow must import here")
        pytest.skip("tensorflow-datasets / tensorflow not installed (pip install -e '.[tfds]')")
    import tensorflow_datasets

    if examples is not None:
        capped = functools.partial(tensorflow_datasets.download.DownloadConfig, max_examples_per_split=examples)
        monkeypatch.setattr(tensorflow_datasets.download, "DownloadConfig", capped)
    idx = load_dataset("mnist")
    tfds = load_dataset.__wrapped__("mnist", str(tmp_path / "tfds"), "tfds")
    train = test = slice(examples)  # TFDS prepares each split's first ones (slice(None): all of them)
    assert tfds.train_images.shape == idx.train_images[train].shape
    assert tfds.test_images.shape == idx.test_images[test].shape
    assert tfds.train_images.dtype == np.uint8 and tfds.train_labels.dtype == np.int64
    assert not np.array_equal(tfds.train_labels, idx.train_labels[train])  # TFDS keeps its own order ...
    assert example_keys(tfds.train_images, tfds.train_labels) == example_keys(
        idx.train_images[train], idx.train_labels[train]
    )
    assert example_keys(tfds.test_images, tfds.test_labels) == example_keys(
        idx.test_images[test], idx.test_labels[test]
    )
