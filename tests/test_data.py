"""IDX reading, data sources, pixel scaling and the shared batch sampler."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.data import BUNDLED_DIR, DEBIAN_FASHION_DIR, images_to_row_sequences, load_dataset, verify_bundled
from common.errors import SeqMnistError
from common.idx import read_idx
from common.sampler import BatchSampler
from jax_impl.train import main as jax_main
from tests.conftest import assert_one_line, idx_bytes, run_main, small_split, write_idx_dir
from torch_impl.train import main as torch_main


def test_bundled_mnist_has_the_standard_shapes_and_label_counts(mnist):
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.train_images.dtype == np.uint8
    assert mnist.test_images.shape == (10000, 28, 28) and mnist.test_labels.dtype == np.int64
    assert np.bincount(mnist.test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert mnist.source.startswith("bundled")


def test_bundled_files_are_checked_against_their_sha256(tmp_path):
    copy = tmp_path / "mnist"
    shutil.copytree(BUNDLED_DIR, copy)
    verify_bundled(copy)
    with gzip.open(copy / "t10k-labels-idx1-ubyte.gz", "rb") as handle:
        payload = bytearray(handle.read())
    payload[-1] = (payload[-1] + 1) % 10
    (copy / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(payload)))
    with pytest.raises(SeqMnistError, match="t10k-labels-idx1-ubyte.gz: SHA-256"):
        verify_bundled(copy)


def test_rows_are_tototensor_scaling_in_unit_interval(mnist):
    rows = images_to_row_sequences(mnist.test_images[:100])
    assert rows.dtype == np.float32 and rows.min() == 0.0 and rows.max() == 1.0
    # ToTensor: img.float().div(255); row t of the image is time step t
    np.testing.assert_array_equal(rows, mnist.test_images[:100].astype(np.float32) / np.float32(255))
    assert images_to_row_sequences(mnist.test_images[:2], "float64").dtype == np.float64


@pytest.mark.parametrize("compress", [True, False])
def test_idx_directory_round_trips(tmp_path, compress):
    train, test = small_split(30, 0), small_split(20, 1)
    directory = write_idx_dir(tmp_path / "d", train, test, compress=compress)
    dataset = load_dataset("mnist", str(directory))
    np.testing.assert_array_equal(dataset.train_images, train[0])
    np.testing.assert_array_equal(dataset.test_labels, test[1])


@pytest.mark.parametrize("layout", ["MNIST/raw", "FashionMNIST/raw"])
def test_torchvision_raw_layout_is_found(tmp_path, layout):
    dataset_name = "mnist" if layout.startswith("MNIST") else "fashion_mnist"
    write_idx_dir(tmp_path / layout, small_split(30, 0), small_split(20, 1))
    assert len(load_dataset(dataset_name, str(tmp_path)).train_images) == 30


@given(images=st.integers(0, 5).flatmap(lambda n: st.binary(min_size=n * 784, max_size=n * 784)))
def test_idx_images_round_trip(tmp_path_factory, images):
    array = np.frombuffer(images, dtype=np.uint8).reshape(-1, 28, 28)
    path = tmp_path_factory.mktemp("idx") / "x-idx3-ubyte"
    path.write_bytes(idx_bytes(array, "images"))
    np.testing.assert_array_equal(read_idx(path, "images"), array)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(payload=st.binary(max_size=2000), kind=st.sampled_from(["images", "labels"]), compress=st.booleans())
def test_idx_reader_fuzz_returns_an_array_or_our_error(tmp_path, payload, kind, compress):
    path = tmp_path / ("f.gz" if compress else "f")
    path.write_bytes(gzip.compress(payload) if compress else payload)
    try:
        array = read_idx(path, kind)
    except SeqMnistError as error:
        assert str(path) in str(error) and "\n" not in str(error)
    else:
        assert array.ndim == (3 if kind == "images" else 1)


def corrupt(directory: Path, name: str, mutate) -> None:
    path = directory / f"{name}.gz"
    with gzip.open(path, "rb") as handle:
        payload = handle.read()
    path.write_bytes(gzip.compress(mutate(payload)))


@pytest.mark.parametrize(
    "mutation, fragment",
    [
        (lambda d: corrupt(d, "train-images-idx3-ubyte", lambda p: p[:-100]), "train-images-idx3-ubyte.gz: truncated"),
        (
            lambda d: corrupt(d, "t10k-labels-idx1-ubyte", lambda p: b"\x00\x00\x08\x03" + p[4:]),
            "not an IDX labels file",
        ),
        (lambda d: corrupt(d, "t10k-labels-idx1-ubyte", lambda p: p[:8] + b"\x0c" + p[9:]), "labels must lie in 0..9"),
        (lambda d: (d / "train-images-idx3-ubyte.gz").write_bytes(b""), "train-images-idx3-ubyte.gz: empty file"),
        (
            lambda d: (d / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08garbage"),
            "t10k-images-idx3-ubyte.gz: cannot read",
        ),
        (lambda d: (d / "t10k-labels-idx1-ubyte.gz").unlink(), "missing t10k-labels-idx1-ubyte"),
        (
            lambda d: (d / "t10k-labels-idx1-ubyte.gz").write_bytes(
                gzip.compress(idx_bytes(np.zeros(7, np.uint8), "labels"))
            ),
            "100 images but 7 labels",
        ),
    ],
)
def test_bad_idx_files_give_one_line_naming_the_file(idx_dir, mutation, fragment):
    mutation(idx_dir)
    with pytest.raises(SeqMnistError) as error:
        load_dataset.__wrapped__("mnist", str(idx_dir))
    assert fragment in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("main", [torch_main, jax_main], ids=["torch", "jax"])
def test_trainers_report_a_truncated_file_in_one_line(idx_dir, tmp_path, main, capsys):
    corrupt(idx_dir, "train-images-idx3-ubyte", lambda p: p[:5000])
    code, _, err = run_main(main, ["--data-dir", str(idx_dir), "--out", str(tmp_path / "run")], capsys)
    assert_one_line(code, err, 1, "train-images-idx3-ubyte.gz: truncated")


@pytest.mark.parametrize("main", [torch_main, jax_main], ids=["torch", "jax"])
def test_trainers_report_a_missing_data_dir(tmp_path, main, capsys):
    code, _, err = run_main(main, ["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")], capsys)
    assert_one_line(code, err, 2, "nowhere: no such directory")
    assert not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.skipif(not DEBIAN_FASHION_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debians_package():
    dataset = load_dataset("fashion_mnist")
    assert dataset.train_images.shape == (60000, 28, 28) and np.bincount(dataset.test_labels).tolist() == [1000] * 10


def test_sampler_is_a_seeded_shuffle_keeping_the_last_partial_batch():
    sampler = BatchSampler(num_examples=1000, batch_size=64, seed=3)
    batches = list(sampler.batches(0))
    assert sampler.steps_per_epoch == 16 == len(batches) and len(batches[-1]) == 1000 - 15 * 64
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert not np.array_equal(np.concatenate(batches), np.arange(1000))
    again = list(BatchSampler(1000, 64, 3).batches(0))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    assert not np.array_equal(sampler.permutation(1), sampler.permutation(0))
    assert not np.array_equal(BatchSampler(1000, 64, 4).permutation(0), sampler.permutation(0))


def test_sampler_resumes_from_an_epoch_and_step():
    sampler = BatchSampler(num_examples=500, batch_size=32, seed=0)
    whole = list(sampler.batches(2))
    resumed = list(sampler.batches(2, start_step=5))
    assert len(resumed) == len(whole) - 5
    assert all(np.array_equal(a, b) for a, b in zip(whole[5:], resumed, strict=True))
    assert np.array_equal(sampler.batch(2, 7), whole[7])


def test_torchvision_source_reads_the_same_arrays(tmp_path, mnist):
    from common.sources import torchvision_importable

    ok, reason = torchvision_importable()
    if not ok:
        pytest.skip(f"torchvision source not testable here: {reason}")
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in BUNDLED_DIR.glob("*.gz"):  # torchvision looks for the unpacked files, and then needs no network
        (raw / path.stem).write_bytes(gzip.decompress(path.read_bytes()))
    dataset = load_dataset.__wrapped__("mnist", str(tmp_path), "torchvision")
    np.testing.assert_array_equal(dataset.train_images, mnist.train_images)
    np.testing.assert_array_equal(dataset.test_labels, mnist.test_labels)
