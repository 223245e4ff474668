"""How many clients train each round: one rule shared by every strategy and the accountant.

Client-level DP needs the exact number of sampled clients up front (the noise std is
``z * clip / sampled``, and Flower's accounted mode refuses a round whose sample differs),
so the number comes from the settings, never from what happened to connect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def train_sample_size(config: Mapping[str, Any]) -> int:
    """Clients sampled to train per round: ``clients-per-round``, else Flower's fraction rule.

    With ``clients-per-round`` 0 this is what :class:`flwr.serverapp.strategy.FedAvg`
    samples from a full population: ``int(clients * fraction-train)``, at least 1.
    """
    per_round = int(config.get("clients-per-round", 0) or 0)
    if per_round > 0:
        return per_round
    return max(int(int(config["clients"]) * float(config["fraction-train"])), 1)


def train_sampling_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    """``fraction_train``/``min_train_nodes`` that make FedAvg sample exactly that many.

    FedAvg samples ``max(int(connected * fraction_train), min_train_nodes)``; with
    ``fraction_train = k / clients`` the product never rounds above ``k``, and
    ``min_train_nodes = k`` lifts a product that rounds down to ``k - 1``.
    """
    clients = int(config["clients"])
    size = train_sample_size(config)
    if int(config.get("clients-per-round", 0) or 0) > 0:
        return {"fraction_train": size / clients, "min_train_nodes": size}
    return {"fraction_train": float(config["fraction-train"]), "min_train_nodes": 1}
