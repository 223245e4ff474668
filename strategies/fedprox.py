"""FedProx (Li et al., 2020), Flower's implementation.

The server side is FedAvg plus one number, ``proximal-mu``, sent in every train
config; the proximal term itself lives in the client's loss (``tasks.proximal``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.serverapp.strategy import FedProx

from strategies.fedavg import fedavg_kwargs
from strategies.registry import register


@register("fedprox")
def build_fedprox(config: Mapping[str, Any]) -> FedProx:
    """FedProx with ``--proximal-mu``; tasks read it from the train config."""
    return FedProx(**fedavg_kwargs(config), proximal_mu=float(config["proximal-mu"]))
