"""ClientApp mods chosen per run: what metrics leave a client, DP-FedAvg's uniform weight,
client-side clipping and SecAgg+.

Flower fixes a ClientApp's mods when the module is imported, but the strategy is a run
setting; :func:`privacy_mod` is always installed and looks at ``context.run_config`` to
decide what to do, delegating the clipping itself to Flower's ``fixedclipping_mod`` /
``adaptiveclipping_mod`` (they need the clipping norm that Flower's client-side DP
wrappers put in the train config).
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable

from fl_sim.app.settings import settings_of
from fl_sim.record.recorder import BOOKKEEPING
from strategies.dp import UNIFORM_WEIGHT
from strategies.secagg import legacy_train_reply, ours_from_legacy_train

CLIPPING_MODS = {"fixed": fixedclipping_mod, "adaptive": adaptiveclipping_mod}
CLEAR = (*BOOKKEEPING, UNIFORM_WEIGHT)
"""Metric keys that are not derived from private data beyond the example count: what a
reply carries under ``--client-metrics none``, and what SecAgg+ leaves in clear."""


def metrics_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Strip every metric but :data:`CLEAR` from replies that must not carry private ones.

    Losses, accuracies and evaluation results are computed on a client's private data and
    no epsilon covers them; with ``--client-metrics none`` only the example count
    (FedAvg's weight), the partition id, the task's seconds and the sample-level epsilon
    leave the client. Under ``--secagg`` evaluation replies are stripped too: SecAgg+
    covers the training round only, and the metrics that are sent must go through its
    secure sum (the training metrics do, :mod:`strategies.secagg`). It runs innermost, so
    the clipping bit Flower's mod adds afterwards still travels.
    """
    reply = call_next(msg, context)
    settings = settings_of(context.run_config)
    private = settings.replies.client_metrics == "none" or (settings.secagg.secagg
                                                            and phase_of(msg) == "evaluate")
    if not private or reply.has_error():
        return reply
    for name, record in reply.content.metric_records.items():
        reply.content[name] = type(record)({k: v for k, v in record.items() if k in CLEAR})
    return reply


def _with_uniform_weight(call_next: ClientAppCallable) -> ClientAppCallable:
    def call(msg: Message, context: Context) -> Message:
        reply = call_next(msg, context)
        if not reply.has_error():
            for record in reply.content.metric_records.values():
                record[UNIFORM_WEIGHT] = 1.0
        return reply

    return call


def privacy_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Per run: DP-FedAvg's uniform weight and client-side clipping, and SecAgg+.

    Under ``--strategy dp-fedavg`` every reply gets weight 1, and with
    ``--dp-clipping client`` the train update is clipped by Flower's mod. With
    ``--secagg`` Flower's ``secaggplus_mod`` runs the protocol, and the train step in its
    masked-vector stage is translated between its legacy ``fitins``/``fitres`` records and
    the ClientApp's ``arrays``/``config``/``metrics``, with clipping inside (on the update
    the ClientApp produced). Otherwise a no-op.
    """
    settings = settings_of(context.run_config)
    dp = settings.strategy == "dp-fedavg"
    secagg = settings.secagg.secagg
    if not dp and not secagg:
        return call_next(msg, context)
    inner = _with_uniform_weight(call_next) if dp else call_next
    if dp and settings.dp_fedavg.dp_clipping == "client":
        inner = _clipped(inner, CLIPPING_MODS[settings.dp_fedavg.dp_clip])
    if secagg:
        return secaggplus_mod(msg, context, _legacy_translated(inner, uniform=dp))
    return inner(msg, context)


def phase_of(msg: Message) -> str:
    """``train``, ``evaluate`` or ``query``: a message type without its sub-type."""
    return msg.metadata.message_type.split(".")[0]


def _is_train(msg: Message) -> bool:
    return phase_of(msg) == "train"


def _clipped(call_next: ClientAppCallable, mod) -> ClientAppCallable:
    def call(msg: Message, context: Context) -> Message:
        return mod(msg, context, call_next) if _is_train(msg) else call_next(msg, context)

    return call


def _legacy_translated(call_next: ClientAppCallable, uniform: bool) -> ClientAppCallable:
    def call(msg: Message, context: Context) -> Message:
        if not _is_train(msg):  # secaggplus_mod passes evaluation through untouched
            return call_next(msg, context)
        ours_from_legacy_train(msg)
        reply = call_next(msg, context)
        if not reply.has_error():
            legacy_train_reply(reply, uniform, clear=CLEAR)
        return reply

    return call
