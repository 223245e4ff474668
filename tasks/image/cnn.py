"""A small image classifier and the loops that train and score it.

Shared by the ``classifier`` and ``disguise`` tasks and by the disguise metrics (the
reference classifier and the leakage probe). GroupNorm instead of BatchNorm keeps the
network DP-compatible (Opacus rejects BatchNorm: per-sample gradients would mix
examples), and an adaptive pool makes it accept 28, 32 or 64 pixel images alike.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import RecordDict
from torch import nn
from torch.nn import functional as F

from tasks import dp_sgd
from tasks.proximal import ProximalAnchor

MOMENTUM = 0.9


class SmallCNN(nn.Module):
    """Two conv blocks and two linear layers (~60k parameters at 10 classes).

    Parameters
    ----------
    channels : int
        Input colour channels.
    num_classes : int
        Output logits.
    width : int
        Channels of the first conv block (the second has twice as many).
    """

    def __init__(self, channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.GroupNorm(4, width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.GroupNorm(4, 2 * width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * 16, 64), nn.ReLU(), nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def make_cnn(channels: int, num_classes: int, seed: int) -> SmallCNN:
    """A seeded :class:`SmallCNN`: every process builds identical initial weights."""
    torch.manual_seed(seed)
    return SmallCNN(channels, num_classes)


def _tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(np.asarray(x, dtype=np.float32)), torch.as_tensor(
        np.asarray(y, dtype=np.int64))


def train_epochs(
    model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int,
    lr: float, seed: int, dp: dp_sgd.DPSettings | None = None,
    state: RecordDict | None = None, proximal: ProximalAnchor | None = None,
) -> dict[str, float]:
    """Train ``model`` in place with SGD (momentum 0.9); optionally DP-SGD via Opacus.

    Parameters
    ----------
    dp : DPSettings, optional
        If given, Opacus clips per-sample gradients, adds noise and samples batches by
        Poisson sampling; ``state`` then carries the accountant across calls, so the
        returned ``epsilon`` is cumulative over every call with the same ``state``.
    state : RecordDict, optional
        The client's ``context.state`` (required with ``dp``).
    proximal : ProximalAnchor, optional
        FedProx: after every optimizer step, the proximal step towards the global model
        (:meth:`ProximalAnchor.pull`, valid with and without DP).

    Returns
    -------
    dict
        ``loss`` (mean training loss of the last epoch) and, with ``dp``, ``epsilon``.
    """
    xt, yt = _tensors(x, y)
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(xt, yt), batch_size=batch_size, shuffle=True,
        generator=generator,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=MOMENTUM)
    trainer = None
    module = model
    if dp is not None:
        if state is None:
            raise ValueError("DP-SGD needs the client's state to keep its accountant")
        trainer = dp_sgd.PrivateTrainer(dp, state)
        module, optimizer, loader = trainer.make_private(model, optimizer, loader, seed=seed)
    module.train()
    losses: list[float] = []
    for _ in range(epochs):
        losses = []
        for xb, yb in loader:
            if len(xb) == 0:  # a Poisson draw can be empty; nothing to learn from
                continue
            optimizer.zero_grad()
            loss = F.cross_entropy(module(xb), yb)
            loss.backward()
            optimizer.step()
            if proximal is not None:
                proximal.pull(model, lr)
            losses.append(float(loss.detach()))
    module.eval()
    metrics = {"loss": float(np.mean(losses)) if losses else float("nan")}
    if trainer is not None:
        metrics.update(trainer.save())
    return metrics


@torch.no_grad()
def logits(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> torch.Tensor:
    """Logits of ``model`` for every image of ``x`` (evaluation mode, no gradients)."""
    model.eval()
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if len(xt) == 0:
        return torch.zeros(0, 0)
    return torch.cat([model(xt[i : i + batch_size]) for i in range(0, len(xt), batch_size)])


def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Predicted class index of every image."""
    return logits(model, x).argmax(1).numpy()


def score(model: nn.Module, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Mean cross-entropy ``loss`` and ``accuracy`` of ``model`` on ``(x, y)``."""
    out = logits(model, x)
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
    return {
        "loss": float(F.cross_entropy(out, yt)),
        "accuracy": float((out.argmax(1) == yt).float().mean()),
    }


def fit(x: np.ndarray, y: np.ndarray, num_classes: int, *, epochs: int, seed: int,
        batch_size: int = 64, lr: float = 0.05) -> SmallCNN:
    """Train a fresh :class:`SmallCNN` centrally (no DP): reference models and probes."""
    model = make_cnn(int(np.asarray(x).shape[1]), num_classes, seed)
    train_epochs(model, x, y, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    return model
