"""Options of what several tasks share: sample-level DP-SGD (:mod:`tasks.dp_sgd`).

Light on purpose (no torch, no Opacus), so ``--help`` and the checks can read it.
"""

from __future__ import annotations

from fl_core.options import Options, at_least, group, one_of, option, positive

ACCOUNTANTS = ("rdp", "prv")
GRAD_SAMPLE_MODES = ("hooks", "functorch", "ew")
VERBOSE_ENV = "FL_SIM_VERBOSE"
"""Set (to 1) by ``--verbose``: the clients show the library warnings ``tasks.dp_sgd`` hides.

Declared here, not in ``tasks.dp_sgd``, with :data:`KNOWN_WARNINGS`, so the launcher and
the logging set-up read them before Ray starts without importing torch first."""
KNOWN_WARNINGS = (
    # Opacus, once per client process: its secure RNG needs torchcsprng, which cannot be
    # installed here (docs/privacy-guarantees.md); the user cannot act on it.
    "Secure RNG turned off",
    # torch, from Opacus's per-sample hooks when D's input needs no gradient (the D step on
    # real images): expected, and the per-sample gradients are right.
    "Full backward hook is firing when gradients are computed with respect to module "
    "outputs since no inputs require gradients",
)
"""Library warnings with nothing for the user to do (hidden unless ``--verbose``)."""


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
