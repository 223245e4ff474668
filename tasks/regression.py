"""Five clients learn y = 2x: the smallest end-to-end check of the federation.

Each client holds its own noisy samples of y = 2x + noise, with its own seed and its own
x-range, so no single client's data pins down the line well; the federated model should
predict about 10 for input 5.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from flwr.app import ArrayRecord, RecordDict
from torch import nn

from fl_core.federation import FederationOptions
from fl_core.options import Settings
from tasks.base import EvalResult, Partition, TrainResult, Workspace
from tasks.proximal import ProximalAnchor

SLOPE = 2.0
NOISE_STD = 0.5
X_LOW, X_HIGH, X_SPAN = -2.0, 8.0, 4.0  # client ranges [lo, lo + span] tile [-2, 8]
TRAIN_SAMPLES, EVAL_SAMPLES = 64, 32
PROBE_X = 5.0


def client_x_range(partition: Partition) -> tuple[float, float]:
    """The x-interval of one client: partitions are spread evenly over [-2, 8]."""
    spread = (X_HIGH - X_LOW - X_SPAN) / max(partition.count - 1, 1)
    low = X_LOW + spread * partition.index
    return low, low + X_SPAN


@cache
def client_data(
    partition: Partition, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (x_train, y_train, x_eval, y_eval) of one client; deterministic per seed."""
    rng = np.random.default_rng([seed, partition.index, partition.count])
    low, high = client_x_range(partition)
    x = rng.uniform(low, high, size=(TRAIN_SAMPLES + EVAL_SAMPLES, 1))
    y = SLOPE * x + rng.normal(0.0, NOISE_STD, size=x.shape)
    x_t, y_t = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    return x_t[:TRAIN_SAMPLES], y_t[:TRAIN_SAMPLES], x_t[TRAIN_SAMPLES:], y_t[TRAIN_SAMPLES:]


def make_model(seed: int) -> nn.Linear:
    """A 1-in, 1-out linear model, seeded so every process builds the same one."""
    torch.manual_seed(seed)
    return nn.Linear(1, 1)


def predict(model: nn.Module, x: float) -> float:
    """The model's prediction for one input."""
    with torch.no_grad():
        return float(model(torch.tensor([[x]])).item())


class RegressionTask:
    """Linear regression of y = 2x across clients with different x-ranges."""

    client_metrics = ("loss", "prediction_at_5")
    server_metrics = ("loss", "prediction_at_5", "weight", "bias")

    def __init__(self, settings: Settings, workspace: Workspace = Workspace()) -> None:
        federation = settings.get(FederationOptions)
        self.seed = federation.seed
        self.local_epochs = federation.local_epochs
        self.batch_size = federation.batch_size
        self.lr = federation.lr

    def _model(self, arrays: ArrayRecord) -> nn.Linear:
        model = make_model(self.seed)
        model.load_state_dict(arrays.to_torch_state_dict())
        return model

    def initial_arrays(self) -> ArrayRecord:
        """Seeded initial weights."""
        return ArrayRecord(make_model(self.seed).state_dict())

    def train(
        self, arrays: ArrayRecord, partition: Partition, state: RecordDict, server_round: int,
        proximal_mu: float = 0.0,
    ) -> TrainResult:
        """Local minibatch SGD on the client's own samples (plus FedProx's term if mu > 0)."""
        model = self._model(arrays)
        anchor = ProximalAnchor(model, proximal_mu)
        x, y, _, _ = client_data(partition, self.seed)
        optimizer = torch.optim.SGD(model.parameters(), lr=self.lr)
        generator = torch.Generator().manual_seed(self.seed * 1000 + server_round)
        loss_fn = nn.MSELoss()
        for _ in range(self.local_epochs):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), self.batch_size):
                batch = order[start : start + self.batch_size]
                optimizer.zero_grad()
                (loss_fn(model(x[batch]), y[batch]) + anchor.term(model)).backward()
                optimizer.step()
        with torch.no_grad():
            loss = float(loss_fn(model(x), y))
        return TrainResult(
            ArrayRecord(model.state_dict()),
            len(x),
            {"loss": loss, "prediction_at_5": predict(model, PROBE_X)},
        )

    def evaluate(self, arrays: ArrayRecord, partition: Partition) -> EvalResult:
        """Mean squared error of the global model on the client's held-out samples."""
        model = self._model(arrays)
        _, _, x, y = client_data(partition, self.seed)
        with torch.no_grad():
            loss = float(nn.functional.mse_loss(model(x), y))
        return EvalResult(len(x), {"loss": loss, "prediction_at_5": predict(model, PROBE_X)})

    def central_evaluate(self, server_round: int, arrays: ArrayRecord) -> dict[str, float]:
        """Error against the noiseless line over the whole x-range, and the fitted line."""
        model = self._model(arrays)
        x = torch.linspace(X_LOW, X_HIGH, 101).unsqueeze(1)
        with torch.no_grad():
            loss = float(nn.functional.mse_loss(model(x), SLOPE * x))
        return {
            "loss": loss,
            "prediction_at_5": predict(model, PROBE_X),
            "weight": float(model.weight.item()),
            "bias": float(model.bias.item()),
        }

    def summary(self, arrays: ArrayRecord) -> dict[str, float]:
        """The global model's prediction for x = 5 and its fitted line."""
        return self.central_evaluate(-1, arrays)
