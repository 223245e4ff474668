"""Options of what several tasks share: sample-level DP-SGD (:mod:`tasks.dp_sgd`).

Light on purpose (no torch, no Opacus), so ``--help`` and the checks can read it.
"""

from __future__ import annotations

from fl_core.options import Options, at_least, group, one_of, option, positive

ACCOUNTANTS = ("rdp", "prv")
GRAD_SAMPLE_MODES = ("hooks", "functorch", "ew")


@group("Sample-level DP-SGD (Opacus)")
class DPSGDOptions(Options):
    """How each client privatises the model that reads its data (image tasks)."""

    dp: bool = option(True, "DP-SGD (Opacus) on the model that reads real data")
    noise_multiplier: float = option(1.0, "DP-SGD noise std / clipping norm (ignored with "
                                     "--target-epsilon)", check=at_least(0))
    max_grad_norm: float = option(1.0, "DP-SGD per-sample clipping norm", check=positive)
    target_epsilon: float = option(0.0, "if > 0: noise multiplier chosen so each client's "
                                   "whole run spends at most this", check=at_least(0))
    accountant: str = option("rdp", "Opacus privacy accountant", check=one_of(ACCOUNTANTS))
    grad_sample_mode: str = option("hooks", "how Opacus computes per-sample gradients",
                                   check=one_of(GRAD_SAMPLE_MODES))
