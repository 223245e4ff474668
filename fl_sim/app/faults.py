"""Injected client faults: failures and stragglers, seeded per (seed, round, partition).

A ClientApp mod, so the task and the glue stay unaware of it and the same faults happen
in a simulation, under ``flwr run`` and on the Deployment Engine. A fault is drawn once
per client and round and holds for both phases of that round (a client that is down in
round 3 neither trains nor evaluates in round 3), so clients.csv shows whole rounds
missing, as a site outage would.

``--fail-rate p`` makes the client raise :class:`InjectedFault`; Flower turns that into an
error reply, which the strategy drops and the recorder writes as ``status=failed``.

``--straggler-rate q --straggler-seconds s`` makes a straggler's reply ``s`` seconds late
on the client's own clock: the reply carries ``injected-delay`` = s, and the server
(:meth:`fl_sim.record.recorder.RunRecorder.accepts`) treats a reply whose measured time
plus its delay exceeds ``--round-timeout`` as one that came too late: recorded as
failed, never aggregated. Why not sleep: in a simulation, clients share a few Ray
actors, so a sleeping straggler would hold up the clients queued behind it, and actor
start-up would count against the first round; on the client's clock only what a client
of its own would take is measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable

from fl_sim.app.settings import settings_of
from fl_sim.options import RunConfig
from fl_sim.record.recorder import INJECTED_DELAY, injected_failure

# Separate streams for the two draws, so turning stragglers on never changes who fails.
_FAIL_STREAM, _STRAGGLER_STREAM = 1, 2
PHASES = ("train", "evaluate")


class InjectedFault(RuntimeError):
    """Raised by a client that ``--fail-rate`` chose to fail this round."""


@dataclass(frozen=True)
class FaultPlan:
    """The fault settings of a run.

    Parameters
    ----------
    seed : int
        The run's seed; the same seed fails the same clients in the same rounds.
    fail_rate, straggler_rate : float
        Probabilities in [0, 1], drawn independently per client and round.
    straggler_seconds : float
        How long a straggler delays its reply.
    """

    seed: int
    fail_rate: float = 0.0
    straggler_rate: float = 0.0
    straggler_seconds: float = 0.0

    @classmethod
    def of(cls, settings: RunConfig) -> FaultPlan:
        """The plan of a run's settings."""
        faults = settings.faults
        return cls(seed=settings.federation.seed, fail_rate=faults.fail_rate,
                   straggler_rate=faults.straggler_rate,
                   straggler_seconds=faults.straggler_seconds)

    @property
    def active(self) -> bool:
        """Whether any fault can happen."""
        return self.fail_rate > 0 or (self.straggler_rate > 0 and self.straggler_seconds > 0)

    def _draw(self, stream: int, server_round: int, partition: int) -> float:
        return float(np.random.default_rng([self.seed, server_round, partition, stream]).random())

    def fails(self, server_round: int, partition: int) -> bool:
        """Whether ``partition`` fails in ``server_round``."""
        return self._draw(_FAIL_STREAM, server_round, partition) < self.fail_rate

    def delay(self, server_round: int, partition: int) -> float:
        """Seconds ``partition`` delays its replies in ``server_round`` (0: on time)."""
        if self._draw(_STRAGGLER_STREAM, server_round, partition) < self.straggler_rate:
            return self.straggler_seconds
        return 0.0


def fault_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """ClientApp mod applying the run's :class:`FaultPlan` to train/evaluate messages."""
    plan = FaultPlan.of(settings_of(context.run_config))
    if not plan.active or msg.metadata.message_type.split(".")[0] not in PHASES:
        return call_next(msg, context)
    server_round = int(msg.content["config"]["server-round"])
    partition = int(context.node_config["partition-id"])
    if plan.fails(server_round, partition):
        raise InjectedFault(injected_failure(plan.fail_rate, server_round, partition))
    reply = call_next(msg, context)
    if not reply.has_error() and "metrics" in reply.content.metric_records:
        # Every reply carries the stamp (0 when on time): strategies average metric keys
        # that every reply has.
        reply.content["metrics"][INJECTED_DELAY] = plan.delay(server_round, partition)
    return reply
