"""How many clients train each round: one rule shared by every strategy and the accountant.

Client-level DP needs the exact number of sampled clients up front (the noise std is
``z * clip / sampled``, and Flower's accounted mode refuses a round whose sample differs),
so the number comes from the settings, never from what happened to connect.
"""

from __future__ import annotations

from fl_core.federation import FederationOptions
from fl_core.options import Settings
from strategies.options import SamplingOptions


def train_sample_size(settings: Settings) -> int:
    """Clients sampled to train per round: ``clients-per-round``, else Flower's fraction rule.

    With ``clients-per-round`` 0 this is what :class:`flwr.serverapp.strategy.FedAvg`
    samples from a full population: ``int(clients * fraction-train)``, at least 1.
    """
    sampling = settings.get(SamplingOptions)
    if sampling.clients_per_round > 0:
        return sampling.clients_per_round
    return max(int(settings.get(FederationOptions).clients * sampling.fraction_train), 1)


def train_sampling_kwargs(settings: Settings) -> dict[str, float | int]:
    """``fraction_train``/``min_train_nodes`` that make FedAvg sample exactly that many.

    FedAvg samples ``max(int(connected * fraction_train), min_train_nodes)``; with
    ``fraction_train = k / clients`` the product never rounds above ``k``, and
    ``min_train_nodes = k`` lifts a product that rounds down to ``k - 1``.
    """
    clients = settings.get(FederationOptions).clients
    sampling = settings.get(SamplingOptions)
    size = train_sample_size(settings)
    if sampling.clients_per_round > 0:
        return {"fraction_train": size / clients, "min_train_nodes": size}
    return {"fraction_train": sampling.fraction_train, "min_train_nodes": 1}
