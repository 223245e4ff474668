"""FedAvg (McMahan et al., 2017), Flower's implementation."""

from __future__ import annotations

from typing import Any

from flwr.serverapp.strategy import FedAvg

from fl_core.federation import FederationOptions
from fl_core.options import Settings
from strategies.options import SamplingOptions
from strategies.sampling import train_sampling_kwargs


def fedavg_kwargs(settings: Settings) -> dict[str, Any]:
    """Sampling arguments shared by every FedAvg-family strategy.

    ``min_available_nodes`` is the whole population (``clients``) so that a deployment
    waits for every SuperNode before round 1; at least one reply makes a round.
    ``clients-per-round`` k > 0 samples exactly k clients in both phases
    (:mod:`strategies.sampling`), so a round's cost is bounded by k, not the population.
    """
    clients = settings.get(FederationOptions).clients
    sampling = settings.get(SamplingOptions)
    per_round = sampling.clients_per_round
    evaluate = (
        {"fraction_evaluate": per_round / clients, "min_evaluate_nodes": per_round}
        if per_round
        else {"fraction_evaluate": sampling.fraction_evaluate, "min_evaluate_nodes": 1}
    )
    return {**train_sampling_kwargs(settings), **evaluate, "min_available_nodes": clients}


def build_fedavg(settings: Settings) -> FedAvg:
    """Plain FedAvg, weighted by each client's ``num-examples``."""
    return FedAvg(**fedavg_kwargs(settings))
