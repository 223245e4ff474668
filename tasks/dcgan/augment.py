"""Shifted images in D's steps, and augmentation multiplicity (De et al. 2022, as in DPDM).

Under DP-SGD every real image's gradient is clipped to norm C and then noised, so a
step's signal is bounded by the number of images in it, not by what each image could
teach. Augmentation multiplicity takes K randomly shifted copies of each real image,
averages their K gradients *inside* that image's per-sample gradient, and only then
clips: the image still contributes one row of norm at most C, so the sensitivity and
the accountant are unchanged, while the averaged row varies less from the image's
exact position. The shifts come from torch's seeded generator, never from the data.

A GAN adds one constraint: if only the reals were shifted, D would learn that shifted
images are real and G would learn to draw them shifted. So the fakes pass through the
same kind of shift, in D's step and (differentiably) in G's, as in DiffAugment (Zhao et
al. 2020). Translation is the one augmentation here because it keeps the meaning of
every image data set: a flipped digit is no longer the same digit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Augment:
    """Random shifts of D's images, and K shifted copies of each real image in D's step.

    Parameters
    ----------
    multiplicity : int
        Copies of each real image whose gradients one clipped row averages (1: the
        shifts alone).
    shift : int
        Largest translation, in pixels, along each axis; edges are repeated.
    """

    multiplicity: int
    shift: int = 2

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Each image translated by its own random whole-pixel (dy, dx) in [-shift, shift].

        Indexing a padded copy keeps the map differentiable, so G's steps can learn
        through it, and exact: a shift moves pixels, it never blends them.
        """
        s = self.shift
        if not s or not len(images):
            return images
        n, channels, height, width = images.shape
        device = images.device
        padded = nn.functional.pad(images, (s, s, s, s), mode="replicate")
        dy, dx = torch.randint(-s, s + 1, (2, n), device=device)
        rows = torch.arange(height, device=device)[None, :] + s + dy[:, None]
        cols = torch.arange(width, device=device)[None, :] + s + dx[:, None]
        return padded[torch.arange(n, device=device)[:, None, None, None],
                      torch.arange(channels, device=device)[None, :, None, None],
                      rows[:, None, :, None], cols[:, None, None, :]]

    def expand(self, real: torch.Tensor,
               labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """K shifted copies of every real image, each image's copies adjacent."""
        k = self.multiplicity
        copies = self(real.repeat_interleave(k, dim=0))
        return copies, None if labels is None else labels.repeat_interleave(k, dim=0)


def fold_copies(module: nn.Module, reals: int, multiplicity: int) -> None:
    """Average each real image's K per-sample gradient rows into one, before clipping.

    ``module``'s parameters carry Opacus's ``grad_sample`` for one D step over
    ``reals * multiplicity`` real rows (each image's copies adjacent) followed by the
    fakes. Afterwards they hold ``reals`` averaged rows and the fakes' rows untouched,
    so the DP optimiser clips one row per real image, as without multiplicity.
    """
    rows = reals * multiplicity
    for p in module.parameters():
        sample = getattr(p, "grad_sample", None)
        if sample is None:
            continue
        if isinstance(sample, list):
            sample = torch.cat(sample, dim=0)
        folded = sample[:rows].reshape(reals, multiplicity, *sample.shape[1:]).mean(dim=1)
        p.grad_sample = torch.cat([folded, sample[rows:]])


def real_weights(reals: int, fakes: int, multiplicity: int,
                 device: torch.device) -> torch.Tensor:
    """Per-row loss weights giving each real image's K copies one image's weight.

    Without DP the loss is an ordinary weighted mean, so the reals' copies must not
    outvote the fakes K to 1 (see :func:`tasks.dcgan.training.balanced_fakes` for why
    the counts must match).
    """
    return torch.cat([torch.full((reals * multiplicity,), 1.0 / multiplicity, device=device),
                      torch.ones(fakes, device=device)])
