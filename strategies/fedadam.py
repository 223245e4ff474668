"""FedAdam (Reddi et al., 2021), Flower's implementation.

Clients train as in FedAvg; the server treats the averaged update as a pseudo-gradient
and applies Adam with its own learning rate (``--server-lr``) and moment decays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.serverapp.strategy import FedAdam

from strategies.fedavg import fedavg_kwargs
from strategies.registry import register


@register("fedadam")
def build_fedadam(config: Mapping[str, Any]) -> FedAdam:
    """FedAdam with ``--server-lr``, ``--adam-beta1``, ``--adam-beta2``, ``--adam-tau``.

    Flower's ``eta_l`` only labels the client learning rate in its summary; ours is
    ``--lr``, so it is passed through for an honest log line.
    """
    return FedAdam(
        **fedavg_kwargs(config),
        eta=float(config["server-lr"]),
        eta_l=float(config["lr"]),
        beta_1=float(config["adam-beta1"]),
        beta_2=float(config["adam-beta2"]),
        tau=float(config["adam-tau"]),
    )
