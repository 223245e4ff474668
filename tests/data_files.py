"""Small data sets in the formats users point ``--data-dir`` at, and hostile files.

Every test makes its own fixtures with these writers: IDX (MNIST, Fashion-MNIST), CIFAR-10
python batches, an image folder, and pickles whose loading would run a shell command.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np

CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """An unsigned-byte IDX file of ``array`` (``path`` or ``path.gz``)."""
    header = (struct.pack(">HBB", 0, 0x08, array.ndim)
              + struct.pack(f">{array.ndim}I", *array.shape))
    raw = header + array.astype(np.uint8).tobytes()
    if gz:
        path = Path(f"{path}.gz")
        with gzip.open(path, "wb") as handle:
            handle.write(raw)
    else:
        path.write_bytes(raw)
    return path


def idx_dir(root: Path, train: int = 30, test: int = 10) -> Path:
    """A tiny MNIST-format folder (train images gzipped, the rest plain)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_idx(root / "train-images-idx3-ubyte", rng.integers(0, 256, (train, 28, 28)), gz=True)
    write_idx(root / "train-labels-idx1-ubyte", np.arange(train) % 10)
    write_idx(root / "t10k-images-idx3-ubyte", np.full((test, 28, 28), 255))
    write_idx(root / "t10k-labels-idx1-ubyte", np.arange(test) % 10)
    return root


def cifar_dir(root: Path, per_batch: int = 4) -> Path:
    """Tiny CIFAR-10 python batches in ``root/cifar-10-batches-py/``."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in CIFAR_FILES:
        entry = {b"batch_label": name.encode(), b"filenames": [b"a.png"] * per_batch,
                 b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": [i % 10 for i in range(per_batch)]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    return root


def image_folder(root: Path, sizes: tuple[tuple[int, int], ...] = ((20, 20),)) -> Path:
    """``root/<class>/<i>.png``: two classes, three images each, cycling through ``sizes``."""
    from PIL import Image

    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            size = sizes[i % len(sizes)]
            Image.new("RGB", size, (i * 40, 80 if label == "dog" else 0, 0)).save(
                root / label / f"{i}.png")
    return root


class Payload:
    """Unpickling this runs ``touch MARKER``: what a hostile file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile_pickle(marker: Path, inside: object = None) -> bytes:
    """A pickle whose loading would create ``marker`` (wrapped in ``inside`` if given)."""
    payload = Payload(marker)
    return pickle.dumps(payload if inside is None else {**inside, "payload": payload},
                        protocol=2)


def hostile_torch_file(path: Path, marker: Path, inside: dict | None = None) -> Path:
    """A ``torch.save`` file whose loading with ``weights_only=False`` creates ``marker``."""
    import torch

    torch.save({**(inside or {}), "payload": Payload(marker)}, path)
    return path
