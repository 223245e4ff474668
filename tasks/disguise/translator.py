"""The translation GAN of the disguise task: hidden-class images -> decoy-class images.

Unpaired image-to-image translation on the data owner's side. One generator ``G`` maps
any image to an image; it never sees a class label, so at inference time it can
disguise an image whose class is unknown (the point of the pipeline). What makes
``G(x)`` look like decoy ``k`` exactly when ``x`` is hidden class ``k``:

* a critic ``D`` with one real/fake logit per decoy class: head ``k`` sees real images
  of decoy ``k`` against ``G(x)`` for ``x`` of hidden ``k`` (adversarial loss per
  decoy class: the disguise must be distributed like real decoy-``k`` digits);
* a frozen auxiliary classifier of the decoy classes, trained on real decoy images:
  ``G`` pays cross-entropy when ``G(x)`` is not recognisably decoy ``k``. This keeps
  the translation a function of the input class (it cannot map everything to one
  decoy), i.e. the class information survives the disguise.

There is no cycle-consistency term: nothing needs to invert the disguise, and keeping
less of the input (pose, stroke) in the disguise is what we want.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fl_core.atomic import replacing
from fl_core.safe_load import load_tensors
from tasks.image import cnn

WIDTH = 16
LR, BETAS = 2e-4, (0.5, 0.999)
CLASS_WEIGHT = 0.3
AUX_EPOCHS = 2


class Translator(nn.Module):
    """Encoder-decoder generator, image in, image out (tanh, [-1, 1]).

    Two stride-2 convolutions down, a residual block, two transposed convolutions
    up: the image side must be divisible by 4 (28, 32, 64 all are).
    """

    def __init__(self, channels: int, width: int = WIDTH) -> None:
        super().__init__()
        self.down = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.GroupNorm(8, 2 * width), nn.LeakyReLU(0.2),
        )
        self.middle = nn.Sequential(
            nn.Conv2d(2 * width, 2 * width, 3, 1, 1), nn.GroupNorm(8, 2 * width), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, 1, 1), nn.GroupNorm(8, 2 * width),
        )
        self.up = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.GroupNorm(4, width), nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(x)
        return self.up(h + self.middle(h))


class Critic(nn.Module):
    """Real/fake critic with one logit per decoy class (a conditional discriminator)."""

    def __init__(self, channels: int, num_decoys: int, width: int = WIDTH) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(2 * width * 16, num_decoys),
        )

    def forward(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The logit of head ``k[i]`` for image ``x[i]``."""
        return self.net(x).gather(1, k.view(-1, 1)).squeeze(1)


@dataclass
class TranslatorReport:
    """How the translator's training went (for disguise.json)."""

    steps: int
    seconds: float
    g_adv_loss: float
    g_class_loss: float
    d_loss: float
    aux_accuracy: float
    """Share of the last 10% of steps' disguises the auxiliary classifier assigned to the
    intended decoy: a training-time indication only; the independent check is the
    reference classifier in :mod:`tasks.disguise.metrics`."""


def train_translator(
    hidden_x: np.ndarray, hidden_k: np.ndarray, decoy_x: np.ndarray, decoy_k: np.ndarray,
    *, num_decoys: int, steps: int, seed: int, batch_size: int = 32,
) -> tuple[Translator, TranslatorReport]:
    """Train ``G`` to turn hidden-class images into decoy-class ones.

    Parameters
    ----------
    hidden_x, hidden_k : arrays
        Hidden-class images and their mapping index ``k`` (hidden ``k`` -> decoy ``k``).
    decoy_x, decoy_k : arrays
        Real decoy-class images (the target distribution) and their index ``k``.
    steps : int
        Generator/critic updates, each on ``batch_size`` images of both sets.

    Returns
    -------
    (Translator, TranslatorReport)
        The trained generator (evaluation mode) and its training figures.
    """
    started = time.perf_counter()
    channels = int(hidden_x.shape[1])
    aux = cnn.fit(decoy_x, decoy_k, num_decoys, epochs=AUX_EPOCHS, seed=seed + 1)
    for p in aux.parameters():
        p.requires_grad_(False)
    torch.manual_seed(seed)
    g, d = Translator(channels), Critic(channels, num_decoys)
    opt_g = torch.optim.Adam(g.parameters(), lr=LR, betas=BETAS)
    opt_d = torch.optim.Adam(d.parameters(), lr=LR, betas=BETAS)
    hx, hk = torch.as_tensor(hidden_x), torch.as_tensor(hidden_k, dtype=torch.long)
    dx, dk = torch.as_tensor(decoy_x), torch.as_tensor(decoy_k, dtype=torch.long)
    rng = torch.Generator().manual_seed(seed)
    tail = max(1, steps // 10)
    record: dict[str, list[float]] = {"adv": [], "cls": [], "d": [], "hit": []}
    for step in range(steps):
        hi = torch.randint(len(hx), (batch_size,), generator=rng)
        di = torch.randint(len(dx), (batch_size,), generator=rng)
        x, k = hx[hi], hk[hi]
        fake = g(x)
        # Critic: real decoy-k images are real for head k, disguises of hidden-k are fake.
        real_logit = d(dx[di], dk[di])
        fake_logit = d(fake.detach(), k)
        d_loss = (F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
                  + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit)))
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        # Generator: fool head k, and be recognisably decoy k.
        adv_logit = d(fake, k)
        adv = F.binary_cross_entropy_with_logits(adv_logit, torch.ones_like(adv_logit))
        class_logits = aux(fake)
        cls = F.cross_entropy(class_logits, k)
        opt_g.zero_grad()
        (adv + CLASS_WEIGHT * cls).backward()
        opt_g.step()
        if step >= steps - tail:
            record["adv"].append(float(adv.detach()))
            record["cls"].append(float(cls.detach()))
            record["d"].append(float(d_loss.detach()))
            record["hit"].append(float((class_logits.argmax(1) == k).float().mean()))
    g.eval()
    mean = {key: float(np.mean(v)) if v else float("nan") for key, v in record.items()}
    return g, TranslatorReport(
        steps=steps, seconds=time.perf_counter() - started, g_adv_loss=mean["adv"],
        g_class_loss=mean["cls"], d_loss=mean["d"], aux_accuracy=mean["hit"],
    )


@torch.no_grad()
def disguise(g: Translator, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """``G(x)`` for every image, float32 in [-1, 1]."""
    g.eval()
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    out = [g(xt[i : i + batch_size]) for i in range(0, len(xt), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros_like(np.asarray(x, dtype=np.float32))


def save_translator(g: Translator, path: Path) -> Path:
    """Save ``G``'s state dict (the data owner's secret: never sent, never published)."""
    with replacing(path) as tmp:
        torch.save(g.state_dict(), tmp)
    return path


def load_translator(path: Path, channels: int) -> Translator:
    """Rebuild a saved translator."""
    g = Translator(channels)
    g.load_state_dict(load_tensors(path, "a translator"))
    return g.eval()


def save_pairs(originals: np.ndarray, disguises: np.ndarray, path: Path,
               scale: int = 3) -> Path:
    """PNG grid: each row alternates original, disguise (images in [-1, 1]).

    Written with PIL only (torchvision cannot be imported here).
    """
    from PIL import Image

    n, c, h, w = originals.shape
    pairs_per_row = 4
    rows = -(-n // pairs_per_row)
    pad = 2
    canvas = np.full((c, rows * (h + pad) + pad, 2 * pairs_per_row * (w + pad) + pad + 4 * 0),
                     64, dtype=np.uint8)
    to_pixels = lambda a: np.clip((a + 1.0) * 127.5, 0, 255).round().astype(np.uint8)  # noqa: E731
    for i in range(n):
        top = pad + (i // pairs_per_row) * (h + pad)
        left = pad + 2 * (i % pairs_per_row) * (w + pad)
        canvas[:, top : top + h, left : left + w] = to_pixels(originals[i])
        canvas[:, top : top + h, left + w + pad : left + 2 * w + pad] = to_pixels(disguises[i])
    picture = canvas[0] if c == 1 else canvas.transpose(1, 2, 0)
    image = Image.fromarray(picture)
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    with replacing(path) as tmp:
        image.save(tmp, format="PNG")
    return path
