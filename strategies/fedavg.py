"""FedAvg (McMahan et al., 2017), Flower's implementation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.serverapp.strategy import FedAvg

from strategies.registry import register
from strategies.sampling import train_sampling_kwargs


def fedavg_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    """Sampling arguments shared by every FedAvg-family strategy.

    ``min_available_nodes`` is the whole population (``clients``) so that a deployment
    waits for every SuperNode before round 1; at least one reply makes a round.
    ``clients-per-round`` k > 0 samples exactly k clients in both phases
    (:mod:`strategies.sampling`), so a round's cost is bounded by k, not the population.
    """
    clients = int(config["clients"])
    per_round = int(config.get("clients-per-round", 0) or 0)
    evaluate = (
        {"fraction_evaluate": per_round / clients, "min_evaluate_nodes": per_round}
        if per_round
        else {"fraction_evaluate": float(config["fraction-evaluate"]), "min_evaluate_nodes": 1}
    )
    return {**train_sampling_kwargs(config), **evaluate, "min_available_nodes": clients}


@register("fedavg")
def build_fedavg(config: Mapping[str, Any]) -> FedAvg:
    """Plain FedAvg, weighted by each client's ``num-examples``."""
    return FedAvg(**fedavg_kwargs(config))
