"""FedProx's proximal term for any task's local training loop.

FedProx sends ``proximal-mu`` in the train config; a task adds
``mu / 2 * ||w - w_global||^2`` to each local loss so that clients with very different
data do not drift far from the global model. Usage in a training loop::

    anchor = ProximalAnchor(model, proximal_mu)   # right after loading global weights
    ...
    loss = loss_fn(model(x), y) + anchor.term(model)

With ``mu == 0`` (every other strategy) ``term`` returns 0 and costs nothing.

Under DP-SGD the term must not enter the loss: Opacus replaces each parameter's
gradient by the clipped, noised sum of per-sample gradients, which a parameter-only
term does not have, so it would be silently dropped. ``pull`` applies the term's
gradient step after the optimizer step instead; it reads only the received global model
and the client's own weights, so it is post-processing and costs no privacy.
"""

from __future__ import annotations

import torch
from torch import nn


class ProximalAnchor:
    """The global weights a client received, and the proximal penalty towards them.

    Parameters
    ----------
    model : nn.Module
        The local model, holding the global weights at construction time.
    mu : float
        Proximal weight from the server (``proximal-mu``); 0 disables the term.
    """

    def __init__(self, model: nn.Module, mu: float) -> None:
        if mu < 0:
            raise ValueError(f"proximal mu must be >= 0, got {mu}")
        self.mu = float(mu)
        self._anchor = (
            [p.detach().clone() for p in model.parameters()] if self.mu else []
        )

    def term(self, model: nn.Module) -> torch.Tensor:
        """``mu / 2 * sum ||p - p_global||^2`` over the trainable parameters."""
        if not self.mu:
            return torch.zeros(())
        squares = [
            (p - anchor).pow(2).sum()
            for p, anchor in zip(model.parameters(), self._anchor, strict=True)
        ]
        return 0.5 * self.mu * torch.stack(squares).sum()

    @torch.no_grad()
    def pull(self, model: nn.Module, lr: float) -> None:
        """Take the proximal term's SGD step: ``p -= lr * mu * (p - p_global)``."""
        if not self.mu:
            return
        for p, anchor in zip(model.parameters(), self._anchor, strict=True):
            p.sub_(lr * self.mu * (p - anchor))
