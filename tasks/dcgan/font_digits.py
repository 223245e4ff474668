"""Public digits drawn from the fonts matplotlib ships: the data of the DCGAN's public prior.

Why fonts: a public prior must cost no privacy and download nothing. matplotlib (already
a dependency) bundles DejaVu, STIX and Computer Modern TrueType fonts, and Pillow's
FreeType renders them, so ten digits in 21 faces are always at hand. Printed glyphs are
too regular to stand in for handwriting, so each copy is bent by a random affine map and
a smooth random displacement field (Simard et al., 2003, used the same elastic trick to
augment MNIST), and its strokes are thickened or thinned to a common relative width.

Each glyph is then laid out as MNIST's own preprocessing did (LeCun et al., 1998): its
bounding box scaled into a 20-pixel box of a 28-pixel image, and the image shifted so that
its centre of mass is at the centre. A generator that learns these digits therefore
learns MNIST's layout and stroke weight without ever seeing MNIST.

An earlier prior used scikit-learn's 8 x 8 digits upsampled to 20 pixels; their blocky
strokes left the prior's generator at FID 181 where these reach 79 (docs/research-log.md).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.nn import functional as F

FONTS = (
    "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
    "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique",
    "DejaVuSansMono-BoldOblique", "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic",
    "DejaVuSerif-BoldItalic", "STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic",
    "STIXGeneralBolIta", "cmr10", "cmb10", "cmss10", "cmti10", "cmtt10",
)
# DejaVu Sans Mono draws its zero with a stroke inside, which no handwritten zero has: a
# public G taught it drew zeros that read as 8 or theta. Those four zeros are left out.
NO_ZERO = ("DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique",
           "DejaVuSansMono-BoldOblique")
GLYPH = 48  # side of the canvas a glyph is drawn and distorted on
BOX = 20 / 28  # MNIST: the digit's bounding box fills 20 of 28 pixels
WIDTH_RANGE = (0.11, 0.17)  # stroke width / glyph side, drawn per copy (MNIST's is ~0.13)


def font_dir() -> str:
    """Where matplotlib keeps its TrueType fonts."""
    import matplotlib

    return os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf")


def glyphs() -> tuple[torch.Tensor, torch.Tensor]:
    """Every digit in every face, white on black, centred: ``(N x 1 x G x G, labels)``."""
    from PIL import Image, ImageDraw, ImageFont

    images, labels = [], []
    for name in FONTS:
        font = ImageFont.truetype(os.path.join(font_dir(), name + ".ttf"), GLYPH * 3 // 4)
        for digit in range(1 if name in NO_ZERO else 0, 10):
            canvas = Image.new("L", (GLYPH, GLYPH), 0)
            draw = ImageDraw.Draw(canvas)
            left, top, right, bottom = draw.textbbox((0, 0), str(digit), font=font)
            draw.text(((GLYPH - (right - left)) / 2 - left, (GLYPH - (bottom - top)) / 2 - top),
                      str(digit), fill=255, font=font)
            images.append(np.asarray(canvas, dtype=np.float32) / 255.0)
            labels.append(digit)
    return torch.from_numpy(np.stack(images))[:, None], torch.tensor(labels)


def render(per_glyph: int, image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``per_glyph`` distorted copies of each glyph, MNIST-style, model range [-1, 1].

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Images ``N x 1 x S x S`` (float32) and their digits (int64), ``N`` at most
        ``206 * per_glyph`` (a copy distorted off its canvas is dropped).
    """
    rng = torch.Generator().manual_seed(seed)
    base, labels = glyphs()
    x = _distort(base.repeat(per_glyph, 1, 1, 1), rng)
    x = _even_strokes(x, rng)
    x, keep = _mnist_layout(x, image_size)
    return (x * 2.0 - 1.0).numpy(), labels.repeat(per_glyph)[keep].numpy().astype(np.int64)


def _uniform(count: int, half_width: float, rng: torch.Generator) -> torch.Tensor:
    return (torch.rand(count, generator=rng) * 2.0 - 1.0) * half_width


def _distort(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Random rotation (+-14 deg), shear, horizontal scale and a smooth elastic field."""
    count = len(x)
    angle, shear = _uniform(count, 0.25, rng), _uniform(count, 0.3, rng)
    scale = 1.0 + _uniform(count, 0.15, rng)
    cos, sin = torch.cos(angle), torch.sin(angle)
    affine = torch.zeros(count, 2, 3)
    affine[:, 0, 0], affine[:, 0, 1] = cos * scale, shear - sin
    affine[:, 1, 0], affine[:, 1, 1] = sin, cos
    grid = F.affine_grid(affine, list(x.shape), align_corners=False)
    field = torch.randn(count, 2, 8, 8, generator=rng) * 0.04
    field = F.interpolate(field, size=x.shape[-2:], mode="bicubic", align_corners=False)
    return F.grid_sample(x, grid + field.permute(0, 2, 3, 1), align_corners=False)


def _dilate(x: torch.Tensor) -> torch.Tensor:
    """3 x 3 grey dilation, as two separable running maxima (fast on large batches)."""
    height, width = x.shape[-2:]
    pad = F.pad(x, (1, 1, 0, 0))
    x = torch.maximum(torch.maximum(pad[..., :width], pad[..., 1:width + 1]),
                      pad[..., 2:width + 2])
    pad = F.pad(x, (0, 0, 1, 1))
    return torch.maximum(torch.maximum(pad[..., :height, :], pad[..., 1:height + 1, :]),
                         pad[..., 2:height + 2, :])


def _erode(x: torch.Tensor) -> torch.Tensor:
    return 1.0 - _dilate(1.0 - x)


def _even_strokes(x: torch.Tensor, rng: torch.Generator, passes: int = 6) -> torch.Tensor:
    """Dilate or erode each copy until its stroke width is a drawn share of its size.

    Bold and light faces would otherwise teach the generator two stroke weights, neither
    MNIST's. Stroke width is estimated as ``2 * area / perimeter`` of the inked mask.
    """
    low, high = WIDTH_RANGE
    target = (low + (high - low) * torch.rand(len(x), generator=rng)).view(-1, 1, 1, 1)
    for _ in range(passes):
        ink = (x > 0.5).float()
        area = ink.sum((1, 2, 3), keepdim=True)
        edge = (ink - _erode(ink)).sum((1, 2, 3), keepdim=True).clamp(min=1.0)
        side = torch.maximum(ink.amax(3).sum(2, keepdim=True),
                             ink.amax(2).sum(2, keepdim=True)).view(-1, 1, 1, 1).clamp(min=1.0)
        ratio = 2.0 * area / edge / side
        x = torch.where(ratio < 0.85 * target, _dilate(x),
                        torch.where(ratio > 1.15 * target, _erode(x), x))
    return x


def _mnist_layout(x: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounding box into a ``BOX`` share of the side, then the centre of mass to the centre.

    Returns the images in [0, 1] and which of the inputs were kept (a copy with no ink
    left on its canvas has no box and is dropped).
    """
    ink = x[:, 0] > 0.3
    index = torch.arange(GLYPH, dtype=torch.float32)
    rows, cols = ink.any(2), ink.any(1)
    top = torch.where(rows, index, float(GLYPH)).amin(1)
    bottom = torch.where(rows, index, -1.0).amax(1)
    left = torch.where(cols, index, float(GLYPH)).amin(1)
    right = torch.where(cols, index, -1.0).amax(1)
    keep = bottom >= top
    x, top, bottom, left, right = x[keep], top[keep], bottom[keep], left[keep], right[keep]
    half = (torch.maximum(bottom - top, right - left) + 1.0) / 2.0 / BOX  # canvas half side
    affine = torch.zeros(len(x), 2, 3)
    affine[:, 0, 0] = affine[:, 1, 1] = half / (GLYPH / 2)
    affine[:, 0, 2] = (left + right + 1.0) / GLYPH - 1.0
    affine[:, 1, 2] = (top + bottom + 1.0) / GLYPH - 1.0
    fine = 2 * size  # sample at twice the side, then average 2 x 2: an antialiased shrink
    grid = F.affine_grid(affine, [len(x), 1, fine, fine], align_corners=False)
    x = F.interpolate(F.grid_sample(x, grid, align_corners=False), size=(size, size),
                      mode="area")
    mass = x[:, 0].sum((1, 2)).clamp(min=1e-6)
    index = torch.arange(size, dtype=torch.float32)
    centre_y = (x[:, 0].sum(2) * index).sum(1) / mass
    centre_x = (x[:, 0].sum(1) * index).sum(1) / mass
    shift = torch.zeros(len(x), 2, 3)
    shift[:, 0, 0] = shift[:, 1, 1] = 1.0
    shift[:, 0, 2] = (centre_x - (size - 1) / 2).round() * 2.0 / size
    shift[:, 1, 2] = (centre_y - (size - 1) / 2).round() * 2.0 / size
    grid = F.affine_grid(shift, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="nearest", align_corners=False)  # whole-pixel shift
    return x.clamp(0.0, 1.0), keep
