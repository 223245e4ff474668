"""A public prior for the DP-DCGAN: D's features and G's start learned from public digits.

Why: with 800 private images per client, DP-SGD's noise drowns a discriminator that
must learn its convolutional features privately (at epsilon 10 its real-vs-fake ROC AUC
falls to about 0.6 by round 8), and a generator learns nothing from a discriminator
that cannot tell. Tramer & Boneh (ICLR 2021, "Differentially private learning needs
better features (or much more data)") make the general point: at small private data,
DP learning needs features that did not have to be learned privately.

What it does, on the server, before round 1 (:func:`pretrain`), on *public* digits
rendered from the fonts matplotlib ships (:mod:`tasks.dcgan.font_digits`, MNIST's layout):

1. D's convolutions are first trained as a 10-class digit classifier, so that the
   public GAN below starts from features that know what a digit is.
2. A non-private GAN on the same digits then trains G and all of D. G learns to draw
   digits in MNIST's layout (round 0 of ``rounds.csv`` measures it), and D's
   convolutions learn what tells a drawn digit from a generated one.
   With a class code (the default, ``--gan-class-code``), G also reads one of ten digit
   classes, like a cGAN's label, and a frozen classifier of the public digits (the
   *guide*, :func:`guide_classifier`) adds a cross-entropy pull towards that class to
   every G loss, here and in the private rounds. D stays unconditional. Why: an
   unconditional G maps one Gaussian onto ten separate digit shapes, so a share of its
   samples fall between classes (measured: about four in ten samples of the best
   unconditional run were not clearly readable digits, the same noise vectors from
   round 0 on); with the code each sample comes from one class's part of G.
3. D's convolutions, all but the last (output) one, are then frozen for the whole run
   (:func:`freeze`): DP-SGD trains only D's GroupNorm scales and its output layer, a
   tenth of D's parameters and of the noise dimensions. The output layer is
   re-initialised, so that the private game does not start from a D that calls every
   private (handwritten) digit fake.

Privacy: everything here is a function of public data and the seed, fixed before any
client reads a private image, so it costs no privacy; Opacus then accounts every private
D step exactly as without the prior (frozen parameters get no per-sample gradients and
no noise). The guide and the class code touch only G's steps, which are post-processing
of the private D; no private label is read (D's loader holds images only). What the
prior does change is what the released G looks like at epsilon 0: round 0 of
``rounds.csv`` measures it, so the gain from the private rounds is visible.
The prior is for one-channel digit data; ``auto`` uses it for the MNIST data sets only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from tasks.dcgan import font_digits
from tasks.dcgan.models import Discriminator, Generator, dcgan_init
from tasks.image import cnn

COPIES = 30  # distorted copies of each of the 206 font glyphs: up to 6,180 public digits
FEATURE_EPOCHS = 5
GAN_EPOCHS = 15
BATCH = 64
LR = 1e-3
CODE_CLASSES = 10  # the class code of G under --gan-class-code: the ten digits
GUIDE_EPOCHS = 5
GUIDE_WEIGHT = 1.0  # the guide's cross-entropy beside G's adversarial loss (both nats)


def public_digits(image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The public digits, model range [-1, 1], ``N x 1 x S x S``, and their labels.

    Cached: the guide and the pretraining both read them (10 s to draw). Treat the
    arrays as read-only.
    """
    return _rendered(COPIES, image_size, seed)


@lru_cache(maxsize=2)
def _rendered(copies: int, image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return font_digits.render(copies, image_size, seed)


def guide_classifier(image_size: int, seed: int) -> cnn.SmallCNN:
    """A digit classifier of the public digits, frozen: the class code's guide.

    A small CNN of its own (not D's features, which the private rounds' GroupNorm scales
    keep moving), trained once on the server; it travels with the global model so every
    client's G steps are pulled towards the same classes.
    """
    x, y = public_digits(image_size, seed)
    model = cnn.fit(x, y, CODE_CLASSES, epochs=GUIDE_EPOCHS, seed=seed)
    return frozen_guide(model)


def frozen_guide(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with gradients off (they still flow through it to G)."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def guide_loss(guide: nn.Module, weight: float | None = None,
               ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """G's extra loss: ``weight`` (default :data:`GUIDE_WEIGHT`) x the guide's
    cross-entropy of fakes against their codes."""
    scale = GUIDE_WEIGHT if weight is None else weight

    def loss(fakes: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return scale * F.cross_entropy(guide(fakes), codes)
    return loss


def frozen_layers(discriminator: Discriminator) -> list[nn.Module]:
    """D's convolutions but the last (output) one: the public feature layers.

    Freezing the first convolution too (it was private in an earlier prior) keeps DP's
    noise out of D's pixel-level filters, which G otherwise copies as speckle.
    """
    convs = [m for m in discriminator.net if isinstance(m, nn.Conv2d)]
    return convs[:-1]


def freeze(discriminator: Discriminator) -> None:
    """Stop gradients to the public feature layers (Opacus then skips them too)."""
    for layer in frozen_layers(discriminator):
        for parameter in layer.parameters():
            parameter.requires_grad_(False)


def _batches(count: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    order = torch.randperm(count, generator=generator)  # drawn on the CPU: device-independent
    yield from order.split(BATCH)


def _features(discriminator: Discriminator, x: torch.Tensor) -> torch.Tensor:
    """D's last hidden feature map, with blank label planes for a conditional D."""
    if discriminator.num_classes:
        blank = x.new_zeros(len(x), discriminator.num_classes, *x.shape[2:])
        x = torch.cat([x, blank], dim=1)
    return discriminator.net[:-1](x).flatten(1)


def pretrain(generator: Generator, discriminator: Discriminator, image_size: int,
             seed: int, device: torch.device | str = "cpu",
             guide: nn.Module | None = None) -> dict[str, float]:
    """Train D's features on public digits, then G and D as a public GAN; reset D's head.

    Deterministic for a seed on one machine and device; it runs once, on the server, and
    the clients receive its result as the initial weights. On a GPU (``device``) its
    training steps take a fraction of the CPU's time (33 s for the whole prior on an H200
    against 117 s on 2 cores, most of the 33 s drawing the digits and fitting the guide
    on the CPU); the networks are handed back on the CPU. A coded G (it
    has classes, D has none) is trained with ``guide``'s pull towards each code.

    Returns
    -------
    dict
        ``public_feature_accuracy``: the feature classifier's accuracy on the public
        digits (a check that the features learned digits), and the last public GAN
        losses.
    """
    torch.manual_seed(seed)
    order = torch.Generator().manual_seed(seed)
    x_np, y_np = public_digits(image_size, seed)
    x, y = torch.from_numpy(x_np).to(device), torch.from_numpy(y_np).to(device)
    generator.to(device)
    discriminator.to(device)
    with torch.no_grad():
        width = _features(discriminator, x[:1]).shape[1]
    head = nn.Linear(width, 10).to(device)
    optimizer = torch.optim.Adam([*discriminator.parameters(), *head.parameters()], lr=LR)
    for _ in range(FEATURE_EPOCHS):
        for index in _batches(len(x), order):
            loss = F.cross_entropy(head(_features(discriminator, x[index])), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = float((head(_features(discriminator, x)).argmax(1) == y).float().mean())
    if guide is not None:
        guide.to(device)
    losses = _public_gan(generator, discriminator, x, y, order, guide)
    if guide is not None:
        guide.cpu()
    # D's output layer learned "public digits are real"; the private digits differ in
    # style, and a head that starts by calling them fake drags G back to the public
    # style. A fresh output layer starts the private game neutral.
    dcgan_init(discriminator.net[-1])
    generator.cpu()
    discriminator.cpu()
    return {"public_feature_accuracy": accuracy, **losses}


def _public_gan(generator: Generator, discriminator: Discriminator, x: torch.Tensor,
                y: torch.Tensor, order: torch.Generator,
                guide: nn.Module | None = None) -> dict[str, float]:
    """A non-private GAN on the public digits; every parameter of G and D trains.

    A conditional pair reads the public labels in both networks; a coded G reads them
    alone, with ``guide``'s loss added to its own.
    """
    g_opt = torch.optim.Adam(generator.parameters(), lr=LR, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=LR, betas=(0.5, 0.999))
    conditional = discriminator.num_classes > 0
    coded = generator.num_classes > 0 and not conditional
    pull = guide_loss(guide) if coded and guide is not None else None
    d_loss = g_loss = torch.zeros(())
    generator.train()
    discriminator.train()
    for _ in range(GAN_EPOCHS):
        for index in _batches(len(x), order):
            real, labels = x[index], (y[index] if conditional else None)
            codes = y[index] if coded else labels
            fake = generator(torch.randn(len(index), generator.latent_dim, device=x.device),
                             codes)
            both = None if labels is None else torch.cat([labels, labels])
            logits = discriminator(torch.cat([real, fake.detach()]), both)
            targets = torch.cat([torch.ones(len(index), device=x.device),
                                 torch.zeros(len(index), device=x.device)])
            d_loss = F.binary_cross_entropy_with_logits(logits, targets)
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            g_loss = F.binary_cross_entropy_with_logits(discriminator(fake, labels),
                                                        torch.ones(len(index), device=x.device))
            g_opt.zero_grad(set_to_none=True)
            (g_loss + pull(fake, codes) if pull is not None else g_loss).backward()
            g_opt.step()
    return {"public_gan_d_loss": float(d_loss.detach()),
            "public_gan_g_loss": float(g_loss.detach())}
