"""The public prior, fitted once per set of inputs and read from the cache after that.

Why: the prior (:mod:`tasks.dcgan.public_prior`) is a function of public digits, the seed,
the initial networks and the code alone, and its fit is a minute or more of every run on
2 cores. Kept in :class:`fl_core.cache.Cache` under a key of all of those (and of the
libraries and the thread count, which change its bits), a later run with the same inputs
reads the fitted networks back instead: bit for bit what it would have fitted.

What an entry holds: G's and D's weights after the fit (D's head re-initialised), the
guide's weights for a coded G, what the fit found (``public_prior.json``'s fields), the
fit's seconds, and torch's global random state after the fit, which a hit restores so that
whatever the process draws next is what it would have drawn after fitting.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fl_core.cache import Cache, digest, entry_key
from tasks.dcgan import font_digits, models, public_prior
from tasks.dcgan.models import Discriminator, Generator
from tasks.image import cnn

KIND = "dcgan-public-prior"
CODE = (public_prior, font_digits, models, cnn)
"""The modules whose source computes the prior (this one is added: it decides what is kept)."""
RECIPE = ("COPIES", "FEATURE_EPOCHS", "GAN_EPOCHS", "BATCH", "LR", "CODE_CLASSES",
          "GUIDE_EPOCHS", "GUIDE_WEIGHT")
"""The recipe's constants, read when the key is made: a value set at run time (a test's
smaller recipe) is another key, though the source file is the same."""


def key_inputs(generator: Generator, discriminator: Discriminator, *, prior: str,
               image_size: int, seed: int, coded: bool) -> dict[str, Any]:
    """Everything the fit reads besides the code and the environment.

    The initial networks enter as a digest of their weights (their width, classes and
    seeded initialisation all show there), the public digits as what draws them: the
    seed, the size and the recipe.
    """
    return {"prior": prior, "image-size": image_size, "seed": seed, "class-code": coded,
            "recipe": {name: getattr(public_prior, name) for name in RECIPE},
            "initial-weights": digest({**_prefixed("generator.", generator),
                                       **_prefixed("discriminator.", discriminator)})}


def _prefixed(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    return {prefix + name: value for name, value in module.state_dict().items()}


def fit_prior(generator: Generator, discriminator: Discriminator, *, prior: str,
              image_size: int, seed: int, coded: bool, device: torch.device,
              cache: Cache | None = None,
              say: Callable[[str], None] = lambda line: None,
              ) -> tuple[nn.Module | None, dict[str, Any]]:
    """Fit the public prior into ``generator`` and ``discriminator``, or read it back.

    Parameters
    ----------
    generator, discriminator : nn.Module
        The seeded initial networks; on return they hold the prior (on the CPU).
    prior, image_size, seed, coded : str, int, int, bool
        The task's resolved prior, image side, seed and whether G has a class code.
    device : torch.device
        Where the fit runs (part of the key: a GPU fit has other bits).
    cache : Cache, optional
        Where fits are kept; None fits and keeps nothing.
    say : callable
        Progress lines for the server's console.

    Returns
    -------
    (guide, record)
        The frozen guide of a coded G (else None) and ``public_prior.json``'s fields:
        what the fit found, ``seconds`` (this run's), ``from_cache`` and ``fit_seconds``
        (the fit's own, in the run that made it).
    """
    started = time.monotonic()
    key, inputs = None, {}
    if cache is not None:
        inputs = key_inputs(generator, discriminator, prior=prior, image_size=image_size,
                            seed=seed, coded=coded)
        key = entry_key(KIND, inputs, (*CODE, sys.modules[__name__]), device.type)
        kept = cache.load(KIND, key)
        restored = kept is not None and _restore(kept, generator, discriminator, coded)
        if restored:
            guide, record = restored
            seconds = round(time.monotonic() - started, 1)
            say(f"public prior: read from the cache in {seconds:.0f} s (its fit took "
                f"{record['fit_seconds']:.0f} s): {cache.root}")
            return guide, {**record, "seconds": seconds, "from_cache": True}
        if kept is not None:
            cache.say(f"cache: {cache.paths(KIND, key)[1]}: not a public prior of these "
                      "networks; fitting again")
    say("public prior: training G and D on public font digits before round 1")
    guide = public_prior.guide_classifier(image_size, seed) if coded else None
    found = public_prior.pretrain(generator, discriminator, image_size, seed, device, guide)
    seconds = round(time.monotonic() - started, 1)
    say(f"public prior: done in {seconds:.0f} s")
    record = {"prior": prior, "device": device.type, "class_code": coded, **found}
    if cache is not None and key is not None:
        payload = {"generator": generator.state_dict(),
                   "discriminator": discriminator.state_dict(),
                   "guide": guide.state_dict() if guide is not None else {},
                   "record": record, "fit_seconds": seconds,
                   "rng_state": torch.get_rng_state()}
        cache.store(KIND, key, payload, inputs)
    return guide, {**record, "seconds": seconds, "from_cache": False, "fit_seconds": seconds}


def _restore(kept: dict[str, Any], generator: Generator, discriminator: Discriminator,
             coded: bool) -> tuple[nn.Module | None, dict[str, Any]] | None:
    """Load an entry into the networks; None, with nothing changed, if it does not fit them.

    Everything is checked before anything is loaded, so a wrong entry leaves the seeded
    initial networks for the fit.
    """
    guide = cnn.SmallCNN(1, public_prior.CODE_CLASSES) if coded else None  # grey digits
    rng_state = kept.get("rng_state")
    record = kept.get("record")
    fit_seconds = kept.get("fit_seconds")
    if not (_fits(kept.get("generator"), generator)
            and _fits(kept.get("discriminator"), discriminator)
            and (guide is None or _fits(kept.get("guide"), guide))
            and _fits({"state": rng_state}, {"state": torch.get_rng_state()})
            and isinstance(record, dict) and isinstance(fit_seconds, float)):
        return None
    generator.load_state_dict(kept["generator"])
    discriminator.load_state_dict(kept["discriminator"])
    if guide is not None:
        guide.load_state_dict(kept["guide"])
        guide = public_prior.frozen_guide(guide)
    torch.set_rng_state(rng_state)
    return guide, {**record, "fit_seconds": fit_seconds}


def _fits(state: Any, like: nn.Module | dict[str, torch.Tensor]) -> bool:
    """``state`` has exactly the tensors of ``like`` (a module's state or a dict): names,
    shapes and dtypes."""
    own = like.state_dict() if isinstance(like, nn.Module) else like
    return (isinstance(state, dict) and state.keys() == own.keys()
            and all(isinstance(state[k], torch.Tensor) and state[k].shape == own[k].shape
                    and state[k].dtype == own[k].dtype for k in own))
