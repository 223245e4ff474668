"""A defective data set is refused before the run folder is claimed and before Ray starts.

Each defect gives one line naming the file and what is wrong, exit code 2, and leaves no
run folder behind.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from fl_sim.cli import main
from tests.data_files import CIFAR_FILES, cifar_dir, idx_dir, image_folder, write_idx


def _refused(tmp_path, capsys, dataset, data_dir, *words):
    out = tmp_path / "out"
    code = main(["run", "--task", "classifier", "--dataset", dataset, "--data-dir",
                 str(data_dir), "--out", str(out), "--rounds", "1"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("fl_sim: error: --data-dir: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err
    assert not out.exists()  # no run folder, so no Ray either
    return err


def test_a_truncated_idx_file(tmp_path, capsys):
    data = idx_dir(tmp_path / "mnist")
    path = data / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    _refused(tmp_path, capsys, "mnist", data, "t10k-images-idx3-ubyte", "truncated",
             "(10, 28, 28)")


def test_an_idx_file_with_a_wrong_magic_number(tmp_path, capsys):
    data = idx_dir(tmp_path / "mnist")
    write_idx(data / "t10k-labels-idx1-ubyte", np.zeros((10, 28, 28)))  # images, not labels
    _refused(tmp_path, capsys, "mnist", data, "t10k-labels-idx1-ubyte", "magic number",
             "0x00000803", "expected 0x00000801")


def test_images_and_labels_of_different_counts(tmp_path, capsys):
    data = idx_dir(tmp_path / "mnist")
    write_idx(data / "t10k-labels-idx1-ubyte", np.arange(7))
    _refused(tmp_path, capsys, "fashion-mnist", data, "10 images", "7 labels")


def test_a_gz_that_is_not_gzip(tmp_path, capsys):
    data = idx_dir(tmp_path / "mnist")
    (data / "train-images-idx3-ubyte.gz").write_bytes(b"plain bytes, no gzip header")
    _refused(tmp_path, capsys, "mnist", data, "train-images-idx3-ubyte.gz", "not a gzip")


def test_a_truncated_gzip_stream(tmp_path, capsys):
    data = idx_dir(tmp_path / "mnist")
    path = data / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])
    _refused(tmp_path, capsys, "mnist", data, "train-images-idx3-ubyte.gz")


@pytest.mark.parametrize("damage", ["truncated", "not a pickle"])
def test_a_damaged_cifar_batch(tmp_path, capsys, damage):
    data = cifar_dir(tmp_path / "cifar")
    path = data / "cifar-10-batches-py" / CIFAR_FILES[2]
    path.write_bytes(path.read_bytes()[:200] if damage == "truncated" else b"\x00" * 64)
    _refused(tmp_path, capsys, "cifar10", data, CIFAR_FILES[2], "not a CIFAR-10 batch")


def test_a_cifar_batch_with_the_wrong_shape(tmp_path, capsys):
    import pickle

    data = cifar_dir(tmp_path / "cifar")
    (data / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(
        {b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}, protocol=2))
    _refused(tmp_path, capsys, "cifar10", data, "test_batch", "(4, 100)")


def test_an_image_folder_with_a_corrupt_png(tmp_path, capsys):
    data = image_folder(tmp_path / "images")
    (data / "dog" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    _refused(tmp_path, capsys, "folder", data, "1.png", "unreadable image")


def test_mixed_image_sizes_in_a_folder_are_resized_as_documented(tmp_path):
    from tasks.image.data import load_images

    data = image_folder(tmp_path / "images", sizes=((20, 20), (64, 31), (7, 90)))
    images = load_images("folder", str(data), 32, 0)
    assert images.train_x.shape[1:] == (3, 32, 32)
    assert len(images.train_x) + len(images.test_x) == 6


def test_a_valid_gzip_data_set_still_loads(tmp_path):
    from tasks.image.data import load_images

    data = idx_dir(tmp_path / "mnist")
    raw = (data / "t10k-labels-idx1-ubyte").read_bytes()
    with gzip.open(data / "t10k-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(raw)
    (data / "t10k-labels-idx1-ubyte").unlink()
    assert load_images("mnist", str(data), 28, 0).test_y.tolist() == list(range(10))
