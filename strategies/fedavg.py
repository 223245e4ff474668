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
    ``clients-per-round`` > 0 samples exactly that many clients to train each round
    (:mod:`strategies.sampling`); evaluation keeps ``fraction-evaluate``.
    """
    return {
        **train_sampling_kwargs(config),
        "fraction_evaluate": float(config["fraction-evaluate"]),
        "min_evaluate_nodes": 1,
        "min_available_nodes": int(config["clients"]),
    }


@register("fedavg")
def build_fedavg(config: Mapping[str, Any]) -> FedAvg:
    """Plain FedAvg, weighted by each client's ``num-examples``."""
    return FedAvg(**fedavg_kwargs(config))
