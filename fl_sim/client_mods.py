"""ClientApp mods chosen per run: DP-FedAvg's uniform weight and client-side clipping.

Flower fixes a ClientApp's mods when the module is imported, but the strategy is a run
setting; :func:`privacy_mod` is always installed and looks at ``context.run_config`` to
decide what to do, delegating the clipping itself to Flower's ``fixedclipping_mod`` /
``adaptiveclipping_mod`` (they need the clipping norm that Flower's client-side DP
wrappers put in the train config).
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable

from strategies.dp import UNIFORM_WEIGHT

CLIPPING_MODS = {"fixed": fixedclipping_mod, "adaptive": adaptiveclipping_mod}


def _with_uniform_weight(call_next: ClientAppCallable) -> ClientAppCallable:
    def call(msg: Message, context: Context) -> Message:
        reply = call_next(msg, context)
        if not reply.has_error():
            for record in reply.content.metric_records.values():
                record[UNIFORM_WEIGHT] = 1.0
        return reply

    return call


def privacy_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Under ``--strategy dp-fedavg``: weight 1 on every reply, and with
    ``--dp-clipping client`` clip the train update with Flower's mod. Otherwise a no-op.

    The weight mod runs inside the clipping mod, so clipping sees the final reply.
    """
    config = context.run_config
    if config.get("strategy") != "dp-fedavg":
        return call_next(msg, context)
    inner = _with_uniform_weight(call_next)
    is_train = msg.metadata.message_type.split(".")[0] == "train"
    if is_train and config.get("dp-clipping") == "client":
        return CLIPPING_MODS[str(config["dp-clip"])](msg, context, inner)
    return inner(msg, context)
