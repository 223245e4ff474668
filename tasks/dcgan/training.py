"""One client's local GAN training: the D and G steps, and the state kept between rounds.

Privacy model. Only the discriminator D reads real images, so only D is trained with
DP-SGD (Opacus: Poisson sampling, per-sample clipping, Gaussian noise). Each D step
feeds one Poisson batch of real images *and* a batch of fakes through D together and
takes one clipped, noised step; a fake row's gradient does not depend on any real
example, so adding or removing one real image changes the summed clipped gradient by
at most C and each step is one subsampled-Gaussian step of the accountant (fakes are not
charged a second step). The generator G learns from D's answers on generated images: a
function of D and of noise, i.e. post-processing, which costs no privacy. During the G
step D's parameters are frozen and its per-sample hooks are off, so no per-sample
gradients are left behind on D.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from flwr.app import ArrayRecord, RecordDict
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from tasks import dp_sgd
from tasks.dcgan.augment import Augment, fold_copies, real_weights
from tasks.dcgan.d_schedule import DStepSchedule
from tasks.dcgan.ema import GeneratorEMA
from tasks.dcgan.models import Generator

BETA1 = 0.5
"""Adam's beta1 for G (DCGAN's choice)."""
OPTIMIZER_KEY = "dcgan-optimizers"


@dataclass(frozen=True, kw_only=True)
class GANSteps:
    """How one local round steps D and G.

    Parameters
    ----------
    epochs : int
        Passes over the client's loader.
    fakes : int
        Detached fakes beside each real batch in a D step (:func:`balanced_fakes`).
    real_label : float
        D's target for real images; < 1 is one-sided label smoothing.
    d_steps : int
        D steps per G step. More let a noisy private D keep up with G; they cost no
        extra privacy per epoch (privacy is spent per D step, i.e. per Poisson batch).
    g_steps : int
        G steps each time G steps (the first on the last fakes, the others on fresh
        ones): post-processing of the private D, so progress without privacy spent.
    augment : Augment or None
        Augmentation multiplicity: K shifted copies of each real image whose gradients
        one clipped row averages; the fakes are shifted too, in D's and G's steps.
    dp : bool
        Whether D is Opacus-wrapped (its per-sample rows are folded, not its loss
        weighted).
    schedule : DStepSchedule or None
        Adaptive D steps per G step: replaces ``d_steps`` and is fed D's accuracy on the
        fakes of each first G step.
    """

    epochs: int
    fakes: int
    real_label: float = 1.0
    d_steps: int = 1
    g_steps: int = 1
    augment: Augment | None = None
    dp: bool = False
    schedule: DStepSchedule | None = None


def optimizer_arrays(opt: torch.optim.Optimizer, prefix: str = "") -> dict[str, torch.Tensor]:
    """An optimiser's per-parameter state as flat tensors, ``{prefix}{index}.{field}``.

    Flat tensors fit an ``ArrayRecord`` and a checkpoint, which hold no nested objects;
    the hyper-parameters are not kept (the code that rebuilds the optimiser sets them).
    """
    return {f"{prefix}{index}.{field}": torch.as_tensor(value).detach().clone()
            for index, values in opt.state_dict()["state"].items()
            for field, value in values.items()}


def restore_optimizer(opt: torch.optim.Optimizer, arrays: Mapping[str, torch.Tensor],
                      prefix: str = "") -> None:
    """Load into ``opt`` the entries of ``arrays`` that :func:`optimizer_arrays` wrote
    under ``prefix``."""
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in arrays.items():
        if name.startswith(prefix):
            index, field = name[len(prefix):].split(".", 1)
            per_param.setdefault(int(index), {})[field] = value
    current = opt.state_dict()
    current["state"] = per_param
    opt.load_state_dict(current)


def save_optimizers(state: RecordDict, g_opt: torch.optim.Optimizer,
                    d_opt: torch.optim.Optimizer, key: str = OPTIMIZER_KEY) -> None:
    """Keep both Adam states (moments, step counts) in the client's ``context.state``.

    Flower rebuilds simulated clients every round; a fresh Adam restarts its moment
    estimates, and its first bias-corrected steps are as large as ``lr`` in every
    coordinate: under DP noise on D that is a burst of noise-driven steps each round.
    The state never leaves the client (only the weights are sent); D's moments are
    functions of its noised gradients (post-processing).
    """
    arrays = {**optimizer_arrays(g_opt, "g."), **optimizer_arrays(d_opt, "d.")}
    if arrays:
        state[key] = ArrayRecord(arrays)


def load_optimizers(state: RecordDict, g_opt: torch.optim.Optimizer,
                    d_opt: torch.optim.Optimizer, key: str = OPTIMIZER_KEY) -> bool:
    """Restore what :func:`save_optimizers` stored; False when nothing was stored."""
    if key not in state:
        return False
    saved = state[key].to_torch_state_dict()
    restore_optimizer(g_opt, saved, "g.")
    restore_optimizer(d_opt, saved, "d.")
    return True


def balanced_fakes(num_examples: int, batch_size: int, dp: bool) -> int:
    """Fakes in each D step: as many as the real images a step sees on average.

    Under DP every example's gradient is clipped to the same norm C, so each row of
    the D step is one equal vote, and the component all votes share (move every
    logit up or down) grows with the difference of the counts. Opacus's Poisson
    batches hold ``N q`` real images on average (61.5 for 800 images at batch 64),
    so batch-size-many fakes would outvote them by 2.5 every step: a steady drift to
    "everything is fake" that the noised discriminative signal could not undo (48
    fakes drifted to "everything is real"). ``N q`` depends only on the client's
    data-set size and batch size, which the privacy plan already treats as public.
    Without DP the batches are exactly ``batch_size`` real images.
    """
    if not dp:
        return batch_size
    rate, _ = dp_sgd.poisson_plan(num_examples, batch_size)
    return max(1, round(num_examples * rate))


def gan_round(
    generator: Generator, discriminator: nn.Module, loader: DataLoader,
    g_opt: torch.optim.Optimizer, d_opt: torch.optim.Optimizer, steps: GANSteps, *,
    after_step: Callable[[], None] | None = None, ema: GeneratorEMA | None = None,
    guide: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Local GAN training; ``discriminator`` may be an Opacus-wrapped module.

    Each D step: one batch of [real; ``steps.fakes`` detached fakes] through D (one
    clipped step under DP). After every ``steps.d_steps`` D steps, ``steps.g_steps`` G
    steps through a frozen D with the non-saturating loss, the first reusing the last
    fakes; ``ema`` (if any) then folds G into its average. ``after_step`` runs after
    each D step (FedProx's proximal pull). A generator with classes
    (``num_classes > 0``) draws uniform labels for its fakes; a conditional D also
    takes the loader's labels with the real images (a coded G's D is unconditional,
    and the loader then holds images only). ``guide(fakes, labels)``, if given, is added
    to each G loss: the public classifier's pull towards the coded class
    (:func:`tasks.dcgan.public_prior.guide_loss`), post-processing like the rest of G's
    step.

    Returns
    -------
    dict
        Mean d_loss, d_fake_accuracy over D steps, g_loss over G steps, d_real_accuracy
        over real images; ``images`` (real images seen), ``steps`` (D) and ``g_steps``.
    """
    generator.train()
    discriminator.train()
    classes = generator.num_classes
    fakes = steps.fakes
    device = next(generator.parameters()).device  # the loader's batches are moved there
    sums = {"d_loss": 0.0, "g_loss": 0.0, "d_real_accuracy": 0.0, "d_fake_accuracy": 0.0}
    real_seen = d_taken = g_taken = 0
    ones = torch.ones(fakes, device=device)

    def draw() -> tuple[torch.Tensor, torch.Tensor | None]:
        """``fakes`` generated images and their (uniform) labels, None if unconditional."""
        y = torch.randint(classes, (fakes,), device=device) if classes else None
        return generator(torch.randn(fakes, generator.latent_dim, device=device), y), y

    augment = steps.augment
    copies = augment.multiplicity if augment is not None else 1
    seen = augment if augment is not None else (lambda images: images)
    schedule = steps.schedule
    since_g = 0  # D steps since G last stepped
    for _ in range(steps.epochs):
        for batch in loader:
            real = batch[0].to(device)
            b = len(real)
            y_real = batch[1].to(device).long() if len(batch) > 1 else None
            if augment is not None:
                real, y_real = augment.expand(real, y_real)
            fake, y_fake = draw()
            y_both = torch.cat([y_real, y_fake]) if y_real is not None else None
            d_opt.zero_grad(set_to_none=True)
            logits = discriminator(torch.cat([real, seen(fake.detach())]), y_both)
            targets = torch.cat([torch.full((b * copies,), steps.real_label, device=device),
                                 torch.zeros(fakes, device=device)])
            if copies > 1 and not steps.dp:
                d_loss = F.binary_cross_entropy_with_logits(
                    logits, targets, weight=real_weights(b, fakes, copies, device),
                    reduction="sum") / (b + fakes)
            else:
                d_loss = F.binary_cross_entropy_with_logits(logits, targets)
            d_loss.backward()
            if copies > 1 and steps.dp:
                fold_copies(discriminator, b, copies)
            d_opt.step()
            d_taken += 1
            since_g += 1
            due = since_g >= (schedule.d_steps if schedule is not None else steps.d_steps)
            if due:
                since_g = 0
            for repeat in range(steps.g_steps if due else 0):
                if repeat:
                    fake, y_fake = draw()
                with dp_sgd.frozen(discriminator):
                    g_opt.zero_grad(set_to_none=True)
                    judged = discriminator(seen(fake), y_fake)
                    g_loss = F.binary_cross_entropy_with_logits(judged, ones)
                    (g_loss + guide(fake, y_fake) if guide is not None else g_loss).backward()
                if schedule is not None and not repeat:
                    schedule.observe(float((judged.detach() < 0).float().mean()))
                g_opt.step()
                if ema is not None:
                    ema.update(generator)
                sums["g_loss"] += float(g_loss.detach())
                g_taken += 1
            if after_step is not None:
                after_step()
            with torch.no_grad():
                if b:
                    sums["d_real_accuracy"] += float((logits[:b * copies] > 0).float().sum()
                                                     ) / copies
                sums["d_fake_accuracy"] += float((logits[b * copies:] < 0).float().mean())
            sums["d_loss"] += float(d_loss.detach())
            real_seen += b
    result = {k: sums[k] / max(d_taken, 1) for k in ("d_loss", "d_fake_accuracy")}
    result["g_loss"] = sums["g_loss"] / max(g_taken, 1)
    result["d_real_accuracy"] = sums["d_real_accuracy"] / max(real_seen, 1)
    result["images"] = float(real_seen)
    result["steps"] = float(d_taken)
    result["g_steps"] = float(g_taken)
    result["d_steps_per_g"] = float(schedule.d_steps if schedule is not None else steps.d_steps)
    return result
