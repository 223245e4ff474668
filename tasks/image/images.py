"""Image grids as PNG files, without torchvision (PIL only)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fl_core.atomic import replacing


def grid(images: np.ndarray, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile ``N x C x H x W`` images in [-1, 1] into one uint8 ``H' x W' (x 3)`` array.

    Parameters
    ----------
    columns : int, optional
        Images per row (default: the square root of N, rounded up).
    padding : int
        Pixels of black between and around images.
    """
    images = np.asarray(images, dtype=np.float32)
    n, c, h, w = images.shape
    columns = columns or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / columns)
    pixels = np.clip((images + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
    canvas = np.zeros((c, rows * (h + padding) + padding, columns * (w + padding) + padding),
                      dtype=np.uint8)
    for i in range(n):
        top = padding + (i // columns) * (h + padding)
        left = padding + (i % columns) * (w + padding)
        canvas[:, top : top + h, left : left + w] = pixels[i]
    return canvas[0] if c == 1 else canvas.transpose(1, 2, 0)


def save_grid(images: np.ndarray, path: str | Path, columns: int | None = None,
              scale: int = 2) -> Path:
    """Write a PNG grid of ``images`` (in [-1, 1]) atomically; ``scale`` enlarges pixels."""
    from PIL import Image

    picture = Image.fromarray(grid(images, columns))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale),
                                 Image.Resampling.NEAREST)
    with replacing(path) as tmp:
        picture.save(tmp, format="PNG")
    return Path(path)
