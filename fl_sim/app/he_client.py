"""The key holders' side of ``--he``: encrypt the weighted update, decrypt only sums.

Clients hold the federation's CKKS context with its secret key (provisioned per run by
the CLI, :mod:`fl_sim.run.he_keys`); the server holds it without (:mod:`strategies.he`).
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from fl_sim.app.client_mods import phase_of
from fl_sim.app.settings import settings_of
from fl_sim.record.recorder import NUM_EXAMPLES
from strategies import he
from strategies.dp import UNIFORM_WEIGHT


def _secret_context(context: Context):
    settings = settings_of(context.run_config)
    return he.load_context(str(he.keys_folder(settings) / he.SECRET_FILE))


def he_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Under ``--he``, replace a train reply's model by its encrypted weighted copy.

    Installed outside the privacy mod, so what is encrypted is the update after
    client-side clipping, weighed by DP-FedAvg's uniform weight or by ``num-examples``.
    """
    settings = settings_of(context.run_config)
    reply = call_next(msg, context)
    if not settings.encryption.he or reply.has_error() or phase_of(msg) != "train":
        return reply
    metrics = reply.content["metrics"]
    weight = float(metrics[UNIFORM_WEIGHT] if UNIFORM_WEIGHT in metrics else metrics[NUM_EXAMPLES])
    vector = he.flatten(reply.content["arrays"]) * weight
    reply.content["arrays"] = he.encrypt(vector, _secret_context(context),
                                         settings.encryption.he_poly_degree // 2)
    return reply


def decrypt_sum(msg: Message, context: Context) -> Message:
    """Answer the server's ``query``: the plaintext of the one encrypted sum it sent."""
    total = he.decrypt(msg.content[he.SUM_KEY], _secret_context(context))
    record = ArrayRecord({"sum": Array(np.asarray(total, dtype=np.float64))})
    return Message(RecordDict({he.PLAIN_KEY: record}), reply_to=msg)


__all__ = ["decrypt_sum", "he_mod"]
