"""FedProx (Li et al., 2020), Flower's implementation.

The server side is FedAvg plus one number, ``proximal-mu``, sent in every train
config; the proximal term itself lives in the client's loss (``tasks.proximal``).
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedProx

from fl_core.options import Settings
from strategies.fedavg import fedavg_kwargs
from strategies.options import FedProxOptions


def build_fedprox(settings: Settings) -> FedProx:
    """FedProx with ``--proximal-mu``; tasks read it from the train config."""
    return FedProx(**fedavg_kwargs(settings),
                   proximal_mu=settings.get(FedProxOptions).proximal_mu)
