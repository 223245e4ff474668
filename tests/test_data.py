"""Image data sets (shipped and file-based) and their partitions."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from tasks.image import data
from tasks.image.data import DataError, class_counts, load_images, partition_indices
from tests import data_files


@pytest.fixture
def idx_dir(tmp_path):
    return data_files.idx_dir(tmp_path)


def test_mnist5k_is_real_mnist_scaled_with_a_stratified_held_out_split():
    images = load_images("mnist5k", "", 28, 42)
    assert images.train_x.shape == (4000, 1, 28, 28) and images.test_x.shape == (1000, 1, 28, 28)
    assert images.train_x.dtype == np.float32 and images.train_y.dtype == np.int64
    assert images.train_x.min() == -1.0 and images.train_x.max() == 1.0
    assert np.bincount(images.test_y).tolist() == [100] * 10
    assert images.num_classes == 10 and images.channels == 1


def test_digits_are_upsampled_to_the_requested_size():
    images = load_images("digits", "", 32, 0)
    assert images.train_x.shape[1:] == (1, 32, 32)
    assert len(images.train_x) + len(images.test_x) == 1797
    assert -1.0 <= images.train_x.min() < images.train_x.max() <= 1.0


def test_idx_files_plain_or_gzipped(idx_dir):
    images = load_images("fashion-mnist", str(idx_dir), 32, 0)
    assert images.train_x.shape == (30, 1, 32, 32) and images.test_x.shape == (10, 1, 32, 32)
    assert np.allclose(images.test_x, 1.0) and images.test_y.tolist() == list(range(10))


def test_missing_and_malformed_idx_files_name_the_expected_files(idx_dir, tmp_path_factory):
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        (idx_dir / "t10k-labels-idx1-ubyte").unlink()
        data.check_source("mnist", str(idx_dir))
    (idx_dir / "t10k-labels-idx1-ubyte").write_bytes(b"garbage!")
    with pytest.raises(DataError, match="wrong magic number"):
        load_images("mnist", str(idx_dir), 28, 1)
    with pytest.raises(DataError, match="--data-dir"):
        data.check_source("mnist", "")
    with pytest.raises(DataError, match="not a folder"):
        data.check_source("cifar10", str(tmp_path_factory.mktemp("x") / "nope"))


def test_cifar10_batches(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name in data.CIFAR_FILES:
        entry = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                 b"labels": [0, 1, 2, 9]}
        (root / name).write_bytes(pickle.dumps(entry))
    images = load_images("cifar10", str(tmp_path), 32, 0)
    assert images.train_x.shape == (20, 3, 32, 32) and images.test_x.shape == (4, 3, 32, 32)
    assert images.channels == 3 and images.num_classes == 10
    (root / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_1"):
        data.check_source("cifar10", str(tmp_path))


def test_image_folder(tmp_path):
    from PIL import Image

    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(5):
            Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(tmp_path / label / f"{i}.png")
    images = load_images("folder", str(tmp_path), 28, 0)
    assert images.channels == 3 and images.num_classes == 2
    assert len(images.train_x) == 8 and len(images.test_x) == 2
    with pytest.raises(DataError, match="one sub-folder of images per class"):
        data.check_source("folder", str(tmp_path / "cat"))


@pytest.mark.parametrize("method", data.PARTITIONS)
def test_partitions_are_disjoint_complete_and_deterministic(method):
    labels = load_images("mnist5k", "", 28, 42).train_y
    parts = partition_indices(labels, 5, method, 0.3, seed=7)
    again = partition_indices(labels, 5, method, 0.3, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined)
    counts = np.array(class_counts(labels, parts, 10))
    assert counts.sum() == len(joined)
    if method == "iid":
        assert len(joined) == len(labels) and [len(p) for p in parts] == [800] * 5
        assert (counts > 40).all()  # every client sees every class
    if method == "pathological":
        assert ((counts > 0).sum(axis=1) <= 2).all()
    if method == "dirichlet":
        assert len(joined) == len(labels)
        assert (counts.max(axis=1) / counts.sum(axis=1) > 0.2).all()  # skewed (iid: ~0.1)


def test_different_seeds_give_different_partitions():
    labels = load_images("mnist5k", "", 28, 42).train_y
    a = partition_indices(labels, 3, "iid", 0.5, seed=1)
    b = partition_indices(labels, 3, "iid", 0.5, seed=2)
    assert not np.array_equal(a[0], b[0])
