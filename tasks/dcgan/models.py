"""DCGAN networks (Radford et al., 2016), sized by image side and channels.

The generator is the paper's: transposed convolutions, BatchNorm + ReLU, tanh output.
The discriminator is the paper's strided-convolution network with LeakyReLU(0.2),
except that BatchNorm becomes GroupNorm: BatchNorm mixes the examples of a batch, so
per-sample gradients (and hence DP-SGD) are undefined for it; GroupNorm normalises each
example on its own. The generator never sees real data, so it may keep BatchNorm.

Supported sides: 28 (7 -> 14 -> 28, MNIST's own size), 32 (4 -> 8 -> 16 -> 32) and
64 (4 -> ... -> 64).

Class-conditional variant (``num_classes > 0``, Mirza & Osindero's cGAN in DCGAN form):
the generator reads ``[z; one_hot(y)]``; the discriminator reads the image with
``num_classes`` extra constant channels, one-hot of the label. Both are plain conv
inputs, so the label is part of each example and of its per-sample gradient: under
DP-SGD the labels are protected exactly like the pixels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LATENT_DIM = 64
SIZES = (28, 32, 64)


def _plan(image_size: int) -> tuple[int, int]:
    """(side of the first feature map, number of 2x up/down-samplings)."""
    if image_size not in SIZES:
        raise ValueError(f"image size must be one of {SIZES}, got {image_size}")
    start = 7 if image_size == 28 else 4
    return start, int(math.log2(image_size // start))


def _groups(channels: int) -> int:
    """GroupNorm groups: 8 channels per group where possible."""
    return max(1, channels // 8)


class Generator(nn.Module):
    """z (``N x latent``) -> images (``N x C x S x S``) in [-1, 1].

    Parameters
    ----------
    image_size : int
        Side S of the images (28, 32 or 64).
    channels : int
        Image channels C (1 for digits, 3 for colour).
    width : int
        Feature maps of the last hidden layer; earlier layers double it.
    latent_dim : int
        Size of the noise vector z.
    num_classes : int
        0: unconditional; K > 0: ``forward(z, y)`` draws images of classes ``y``.
    """

    def __init__(self, image_size: int, channels: int, width: int = 32,
                 latent_dim: int = LATENT_DIM, num_classes: int = 0) -> None:
        super().__init__()
        start, ups = _plan(image_size)
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        widths = [width * 2 ** (ups - 1 - i) for i in range(ups)]
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim + num_classes, widths[0], start, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]), nn.ReLU(True),
        ]
        for w_in, w_out in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(w_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        z = z.view(len(z), self.latent_dim)
        if self.num_classes:
            z = torch.cat([z, one_hot(y, self.num_classes)], dim=1)
        return self.net(z.view(len(z), -1, 1, 1))


class Discriminator(nn.Module):
    """Images -> one logit per image (real > 0 > fake); DP-compatible (GroupNorm).

    Parameters
    ----------
    image_size, channels, width
        As for :class:`Generator`; the first layer has ``width`` feature maps and each
        stride-2 layer doubles them.
    num_classes : int
        0: unconditional; K > 0: ``forward(x, y)`` judges "real image of class y".
    """

    def __init__(self, image_size: int, channels: int, width: int = 32,
                 num_classes: int = 0) -> None:
        super().__init__()
        start, downs = _plan(image_size)
        self.num_classes = num_classes
        widths = [width * 2 ** i for i in range(downs)]
        layers: list[nn.Module] = [nn.Conv2d(channels + num_classes, widths[0], 4, 2, 1),
                                   nn.LeakyReLU(0.2)]
        for w_in, w_out in zip(widths, widths[1:]):
            layers += [nn.Conv2d(w_in, w_out, 4, 2, 1, bias=False),
                       nn.GroupNorm(_groups(w_out), w_out), nn.LeakyReLU(0.2)]
        layers += [nn.Conv2d(widths[-1], 1, start, 1, 0)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            planes = one_hot(y, self.num_classes)[:, :, None, None]
            x = torch.cat([x, planes.expand(-1, -1, *x.shape[2:])], dim=1)
        return self.net(x).view(-1)


def one_hot(y: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """Float one-hot rows of labels ``y``; a conditional network refuses missing labels."""
    if y is None:
        raise ValueError("a class-conditional network needs labels y")
    return nn.functional.one_hot(y.long(), num_classes).float()


def dcgan_init(module: nn.Module) -> None:
    """The paper's initialisation: conv weights ~ N(0, 0.02), norm scales ~ N(1, 0.02)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(layer.weight, 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)


def build_pair(image_size: int, channels: int, width: int, seed: int,
               num_classes: int = 0, code_classes: int = 0) -> tuple[Generator, Discriminator]:
    """A seeded, initialised (G, D): identical in every process for the same seed.

    ``code_classes`` > 0 (with ``num_classes`` 0) gives G a class code, read like a cGAN's
    label, while D stays unconditional: see ``tasks/public_prior.py`` (the code's classes
    are learned from public digits; no private label is ever read).
    """
    torch.manual_seed(seed)
    generator = Generator(image_size, channels, width, num_classes=num_classes or code_classes)
    discriminator = Discriminator(image_size, channels, width, num_classes=num_classes)
    dcgan_init(generator)
    dcgan_init(discriminator)
    return generator, discriminator
