"""FedAdam (Reddi et al., 2021), Flower's implementation.

Clients train as in FedAvg; the server treats the averaged update as a pseudo-gradient
and applies Adam with its own learning rate (``--server-lr``) and moment decays.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedAdam

from fl_core.federation import FederationOptions
from fl_core.options import Settings
from strategies.fedavg import fedavg_kwargs
from strategies.options import FedAdamOptions


def build_fedadam(settings: Settings) -> FedAdam:
    """FedAdam with ``--server-lr``, ``--adam-beta1``, ``--adam-beta2``, ``--adam-tau``.

    Flower's ``eta_l`` only labels the client learning rate in its summary; ours is
    ``--lr``, so it is passed through for an honest log line.
    """
    adam = settings.get(FedAdamOptions)
    return FedAdam(
        **fedavg_kwargs(settings),
        eta=adam.server_lr,
        eta_l=settings.get(FederationOptions).lr,
        beta_1=adam.adam_beta1,
        beta_2=adam.adam_beta2,
        tau=adam.adam_tau,
    )
