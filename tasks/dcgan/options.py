"""Options of the DP-DCGAN task (:mod:`tasks.dcgan.task`); light, for ``--help``."""

from __future__ import annotations

from fl_core.options import (
    OptionError,
    Options,
    Settings,
    at_least,
    below_one,
    group,
    one_of,
    option,
)

PRIORS = ("auto", "digits", "none")
DIGIT_DATASETS = ("mnist5k", "mnist")
"""What ``--gan-public-prior auto`` gives the digits prior."""


def resolve_prior(prior: str, dataset: str, channels: int | None = None) -> str:
    """The prior a run uses: ``auto`` means digits for the MNIST data sets, else none.

    Raises
    ------
    ValueError
        ``digits`` for colour images (the public digits are grey).
    """
    if prior not in PRIORS:
        raise ValueError(f"must be one of {', '.join(PRIORS)} (got {prior!r})")
    if prior == "auto":
        return "digits" if dataset in DIGIT_DATASETS else "none"
    if prior == "digits" and channels not in (None, 1):
        raise ValueError(f"digits needs one-channel images (--dataset {dataset} has "
                         f"{channels})")
    return prior


PRIOR_SHIFT = 2
"""What ``--gan-aug-shift -1`` gives a run with the digits prior: measured to lower the
FID of the default run and of the conditional runs with the prior, and to raise it
without the prior."""


def resolve_shift(shift: int, prior: str) -> int:
    """The largest shift a run uses; ``prior`` is resolved (``digits`` or ``none``)."""
    if shift >= 0:
        return shift
    return PRIOR_SHIFT if prior == "digits" else 0


def _real_label(v: float) -> str | None:
    return None if 0.5 < v <= 1 else f"must be in (0.5, 1] (got {v})"


@group("DP-DCGAN")
class DCGANOptions(Options):
    """The GAN's networks, optimisers, steps and public prior (``--task dcgan``)."""

    gan_d_lr: float = option(0.003, "discriminator Adam learning rate (0: same as --lr, which "
                             "sets the generator's)", check=at_least(0))
    gan_keep_optimizer: bool = option(True, "keep each client's Adam states across rounds in "
                                      "its context.state")
    gan_real_label: float = option(1.0, "D's target for real images (one-sided label "
                                   "smoothing: < 1)", check=_real_label)
    gan_width: int = option(32, "feature maps of G's last and D's first layer",
                            check=at_least(4))
    gan_d_steps: int = option(1, "discriminator steps per generator step (privacy is spent "
                              "per D step)", check=at_least(1))
    gan_d_steps_adapt: float = option(
        0.0, "raise D steps per G step along 1, 2, 5, 10, 20, 50 whenever D's smoothed accuracy "
        "on fakes falls to this (Bie et al.: 0.6; 0: off; free: fakes only)", check=below_one)
    gan_d_beta1: float = option(0.5, "D's Adam beta1 (DCGAN: 0.5); larger averages DP noise "
                                "over more steps", check=below_one)
    gan_g_steps: int = option(3, "generator steps after each D step (free: G is "
                              "post-processing of D)", check=at_least(1))
    gan_server_g_steps: int = option(0, "generator steps the server takes against the "
                                     "aggregated D after each round (free: post-processing)",
                                     check=at_least(0))
    gan_aug_shift: int = option(-1, "D sees real and fake images shifted by up to this many "
                                "pixels, and G learns through the same shifts (0: off; -1: "
                                f"{PRIOR_SHIFT} with the digits prior, 0 without)",
                                check=at_least(-1))
    gan_aug_mult: int = option(1, "augmentation multiplicity: shifted copies of each real "
                               "image averaged inside its clipped gradient (privacy unchanged)",
                               check=at_least(1))
    gan_ema: float = option(0.999, "decay of the EMA of G's weights used for samples and "
                            "release (0: off)", check=below_one)
    gan_public_prior: str = option(
        "auto", "public data D's feature layers are trained on (then frozen) and G starts "
        "from (auto: digits for mnist5k/mnist, none otherwise)", check=one_of(PRIORS))
    gan_class_code: bool = option(
        True, "with the digits prior, G draws one of ten digit classes per sample, pulled "
        "there by a frozen public classifier (D stays unconditional; no private label is read)")
    conditional: bool = option(
        False, "dcgan: condition G and D on the label (labels are private data too); reports "
        "train-on-synthetic/test-on-real accuracy every round")
    tstr_seeds: int = option(1, "TSTR classifiers (seeds) averaged per score under "
                             "--conditional; their spread is reported as tstr_accuracy_std",
                             check=at_least(1))

    def validate(self, settings: Settings) -> None:
        """``--conditional`` is for dcgan only; a digits prior needs one-channel images;
        copies of an image are only different with a shift."""
        if self.conditional and settings.task != "dcgan":
            raise OptionError("conditional",
                              f"is for --task dcgan only (got --task {settings.task})")
        if settings.task != "dcgan":
            return
        from tasks.image.options import ImageDataOptions

        dataset = settings.get(ImageDataOptions).dataset
        channels = {"cifar10": 3, "folder": None}.get(dataset, 1)
        try:
            prior = resolve_prior(self.gan_public_prior, dataset, channels)
        except ValueError as error:
            raise OptionError("gan-public-prior", str(error)) from None
        if self.gan_aug_mult > 1 and not resolve_shift(self.gan_aug_shift, prior):
            raise OptionError("gan-aug-mult", f"needs a shift (got --gan-aug-mult "
                              f"{self.gan_aug_mult} with --gan-aug-shift 0 for prior {prior})")
