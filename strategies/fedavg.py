"""FedAvg (McMahan et al., 2017), Flower's implementation."""

from __future__ import annotations

from typing import Any

from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from fl_core.federation import FederationOptions
from fl_core.options import Settings
from strategies.options import SamplingOptions
from strategies.sampling import train_sampling_kwargs

PER_CLIENT_KEYS = ("partition-id", "seconds", "injected-delay", "epsilon", "noise_multiplier",
                   "sample_rate", "dp_steps")
"""Reply metrics that describe one client, not the model: averaging them means nothing."""


def aggregate_model_metrics(records: list[RecordDict], weighting_metric_name: str) -> MetricRecord:
    """Flower's weighted mean of the replies' metrics, without :data:`PER_CLIENT_KEYS`.

    The per-client keys still reach the server in each reply (clients.csv keeps them); only
    the aggregate, which Flower logs and rounds.csv records, leaves them out.
    """
    from fl_core.flower import aggregate_metricrecords

    aggregated = aggregate_metricrecords(records, weighting_metric_name)
    for key in PER_CLIENT_KEYS:
        aggregated.pop(key, None)
    return aggregated


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
    return {**train_sampling_kwargs(settings), **evaluate, "min_available_nodes": clients,
            "train_metrics_aggr_fn": aggregate_model_metrics,
            "evaluate_metrics_aggr_fn": aggregate_model_metrics}


def build_fedavg(settings: Settings) -> FedAvg:
    """Plain FedAvg, weighted by each client's ``num-examples``."""
    return FedAvg(**fedavg_kwargs(settings))
