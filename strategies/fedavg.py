"""FedAvg (McMahan et al., 2017), Flower's implementation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.serverapp.strategy import FedAvg

from strategies.registry import register


def fedavg_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    """Sampling arguments shared by every FedAvg-family strategy.

    ``min_available_nodes`` is the whole population (``clients``) so that a deployment
    waits for every SuperNode before round 1; at least one reply makes a round.

    ``clients-per-round`` k > 0 samples exactly k nodes per phase: Flower samples
    ``max(int(n * fraction), min_nodes)`` nodes, and with ``fraction = k / n`` the first
    term is k or (float rounding) k - 1, so ``min_nodes = k`` pins it to k.
    """
    clients = int(config["clients"])
    per_round = int(config.get("clients-per-round", 0))
    if per_round:
        return {
            "fraction_train": per_round / clients,
            "fraction_evaluate": per_round / clients,
            "min_train_nodes": per_round,
            "min_evaluate_nodes": per_round,
            "min_available_nodes": clients,
        }
    return {
        "fraction_train": float(config["fraction-train"]),
        "fraction_evaluate": float(config["fraction-evaluate"]),
        "min_train_nodes": 1,
        "min_evaluate_nodes": 1,
        "min_available_nodes": clients,
    }


@register("fedavg")
def build_fedavg(config: Mapping[str, Any]) -> FedAvg:
    """Plain FedAvg, weighted by each client's ``num-examples``."""
    return FedAvg(**fedavg_kwargs(config))
