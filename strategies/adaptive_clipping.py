"""Flower's adaptive-clipping wrappers with the clip-norm update of Andrew et al.

Andrew et al. ("Differentially Private Learning with Adaptive Clipping", NeurIPS 2021,
Algorithm 1) move the clipping norm with the fraction of updates that were **not**
clipped: ``C <- C * exp(-lr * (unclipped_fraction - gamma))``, so C grows while most
updates are clipped and shrinks while few are, and settles at the ``gamma``-quantile of the
update norms. TensorFlow Privacy's quantile estimator and Opacus's AdaClip do the same.

Flower 1.42 (``flwr/serverapp/strategy/dp_adaptive_clipping.py``,
``DifferentialPrivacyAdaptiveBase._geometric_update``) puts the fraction that **was**
clipped into that formula (its norm bit is ``scaling_factor < 1`` in
``flwr/supercore/differential_privacy.py``, ``adaptive_clip_inputs_inplace``). The sign of
the feedback is therefore inverted: the target quantile is an unstable point and C runs to
zero or to infinity. The classes below correct that one method and nothing else: which
updates are clipped, the noise on the count (``clipped_count_stddev``), the noise on the
sum and the split of the noise multiplier stay Flower's, so what is released, and hence
its accounting in :mod:`strategies.dp`, is unchanged (the unclipped count is the number of
replies minus the clipped count: the same Gaussian query).

``target_clipped_quantile`` keeps Flower's name but takes Andrew et al.'s meaning: the
quantile of update norms C tracks, i.e. the share of updates left unclipped (at the
default 0.5, the median, both readings agree).
"""

from __future__ import annotations

import math

from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
)


def next_clipping_norm(clip: float, clipped_fraction: float, target: float, lr: float) -> float:
    """Andrew et al.'s geometric step from the (noisy) share of updates that were clipped.

    Parameters
    ----------
    clip : float
        The clipping norm used this round.
    clipped_fraction : float
        Noisy share of this round's updates whose norm exceeded ``clip``.
    target : float
        Quantile of update norms to track (share of updates to leave unclipped).
    lr : float
        Geometric learning rate.
    """
    unclipped_fraction = 1.0 - clipped_fraction
    return clip * math.exp(-lr * (unclipped_fraction - target))


class _AndrewUpdate:
    """Replaces Flower's ``_geometric_update`` (the only line its two classes get wrong)."""

    clipping_norm: float
    clip_norm_lr: float
    target_clipped_quantile: float

    def _geometric_update(self, clipped_fraction: float) -> None:
        self.clipping_norm = next_clipping_norm(
            self.clipping_norm, clipped_fraction, self.target_clipped_quantile,
            self.clip_norm_lr,
        )


class ServerSideAdaptiveClipping(_AndrewUpdate, DifferentialPrivacyServerSideAdaptiveClipping):
    """Flower's server-side adaptive clipping, converging to the target quantile."""


class ClientSideAdaptiveClipping(_AndrewUpdate, DifferentialPrivacyClientSideAdaptiveClipping):
    """Flower's client-side adaptive clipping (``adaptiveclipping_mod``), converging."""
