"""Exponential moving average (EMA) of the generator's weights.

Why: a GAN's generator keeps moving around the equilibrium, and under DP-SGD the
discriminator it chases is noisy, so the last iterate is often a poor sample of the
training trajectory (FID swinging between rounds). Averaging the generator's weights
over recent steps (Yazici et al., 2019; used by the DP-GAN literature, e.g. Bie et al.,
2023) damps the swing at no privacy cost: the average is post-processing of G, itself
post-processing of the private D.

Federated: the average travels with the model as a third set of weights
(``generator_ema.*``). Each client continues it after every G step from the averaged
value it received, and the strategy averages it like any other weights; as the EMA is
linear in G, the mean of the clients' EMAs is the EMA of the mean trajectory. Released
samples, FID and the sample grids use the EMA weights when it is on.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

EMA_PREFIX = "generator_ema."
WARMUP = 10


def decay_at(decay: float, step: int, warmup: bool = True) -> float:
    """Decay for the ``step``-th update (0-based), with TensorFlow's warm-up.

    ``min(decay, (1 + t) / (10 + t))`` keeps early averages from being dominated by the
    random initialisation when a run has only a few hundred G steps. It also caps the
    decay: a default run's 780 G steps never pass 0.989, so unless ``warmup`` is off, a
    larger ``decay`` does nothing. A G that starts from the public prior has no random
    start to forget, and the average may start at the prior from the first step.
    """
    return min(decay, (1 + step) / (WARMUP + step)) if warmup else decay


class GeneratorEMA:
    """The running average of a generator's state dict (weights and BatchNorm buffers).

    Parameters
    ----------
    start : Mapping[str, torch.Tensor]
        The average so far (the generator's own weights at the very start).
    decay : float
        Weight of the old average in each update, in (0, 1).
    first_step : int
        How many updates the average already holds (sets the warm-up decay).
    warmup : bool
        Ramp the decay up from the first step (a random start); off for a G that starts
        from a pretrained prior.
    """

    def __init__(self, start: Mapping[str, torch.Tensor], decay: float,
                 first_step: int = 0, warmup: bool = True) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.step = first_step
        self.state = {k: v.detach().clone() for k, v in start.items()}

    @torch.no_grad()
    def update(self, generator: nn.Module) -> None:
        """Fold the generator's current weights into the average."""
        beta = decay_at(self.decay, self.step, self.warmup)
        for name, value in generator.state_dict().items():
            if value.is_floating_point():
                self.state[name].mul_(beta).add_(value.detach(), alpha=1 - beta)
            else:  # e.g. BatchNorm's num_batches_tracked
                self.state[name].copy_(value)
        self.step += 1


def ema_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The EMA weights stored in a joint state dict (empty when EMA is off)."""
    return {k[len(EMA_PREFIX):]: v for k, v in state.items() if k.startswith(EMA_PREFIX)}


def with_ema(state: Mapping[str, torch.Tensor],
             ema: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` plus the EMA weights under :data:`EMA_PREFIX`."""
    joint = dict(state)
    joint.update({f"{EMA_PREFIX}{k}": v.detach().clone() for k, v in ema.items()})
    return joint
