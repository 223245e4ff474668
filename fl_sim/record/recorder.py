"""Turns a round's Flower replies and server evaluation into result rows.

It is the :class:`strategies.recording.RoundObserver` of a run: client rows are written
as soon as a phase's replies arrive; the round row when the server has evaluated the new
global model, which ends the round in ``Strategy.start``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import Message, MetricRecord

from fl_sim.record.results import ResultsWriter

LOG = logging.getLogger(__name__)

_PARTITION = re.compile(r"injected failure .*? partition (\d+)|\bpartition (\d+): ")


def injected_failure(rate: float, server_round: int, partition: int) -> str:
    """The error text of a fault ``--fail-rate`` injected (``fl_sim.app.faults``)."""
    return f"injected failure (fail-rate {rate}) in round {server_round}, partition {partition}"


def faulted_partition(reason: str | None) -> int | None:
    """The partition named in an error reply's reason, if it names one.

    An error reply carries no content; the fault mod's injected failures end in
    ``partition N`` and the client glue starts every task error with ``partition N:``,
    so clients.csv names the partition of a node that failed before it ever replied.
    """
    match = _PARTITION.search(reason or "")
    return int(match.group(1) or match.group(2)) if match else None


# Keys clients add to every MetricRecord besides the task's metrics (see client_app).
NUM_EXAMPLES = "num-examples"
PARTITION_ID = "partition-id"
SECONDS = "seconds"
INJECTED_DELAY = "injected-delay"
"""Seconds a simulated straggler's reply is late (``fl_sim.app.faults``)."""
DP_ROUND = ("noise_multiplier", "sample_rate", "dp_steps")
"""A DP-SGD client's round: public values (settings and the example count), kept per client."""
BOOKKEEPING = (NUM_EXAMPLES, PARTITION_ID, SECONDS, INJECTED_DELAY, "epsilon", *DP_ROUND)


def time_taken(metrics: Mapping[str, Any]) -> float:
    """A reply's time on the client's own clock: its task's seconds plus its injected delay."""
    return float(metrics.get(SECONDS, 0.0)) + float(metrics.get(INJECTED_DELAY, 0.0))


class RunRecorder:
    """Collects one run's rows and hands them to a :class:`ResultsWriter`.

    Parameters
    ----------
    writer : ResultsWriter
        Destination of the rows.
    run_id : str
        Written in every row, so CSVs of several runs can be concatenated.
    on_round : callable, optional
        Called with each finished round row (progress display).
    min_replies : int
        A round with fewer successful training replies is recorded as ``skipped``.
    deadline : float, optional
        ``--round-timeout``: a reply whose own time plus its injected delay exceeds it
        came too late (:meth:`accepts`).
    delta : float, optional
        ``--delta``, written beside every epsilon of rounds.csv.
    """

    def __init__(
        self,
        writer: ResultsWriter,
        run_id: str,
        on_round: Callable[[dict[str, Any]], None] | None = None,
        min_replies: int = 1,
        deadline: float | None = None,
        delta: float | None = None,
    ) -> None:
        self.writer = writer
        self.run_id = run_id
        self.on_round = on_round
        self.min_replies = min_replies
        self.deadline = deadline
        self.delta = delta
        self._late: set[tuple[int, str, int]] = set()
        self._partition_of: dict[int, int] = {}
        self._round: dict[str, Any] = {}
        self._started = time.perf_counter()
        self._epsilons: dict[int, float] = {}

    # --- RoundObserver -------------------------------------------------------------
    def on_configure(self, server_round: int, phase: str, node_ids: list[int]) -> None:
        """Start the round's clock at its first phase and remember who was sampled."""
        if phase == "train" or not self._round:
            self._started = time.perf_counter()
            self._round = {"round": server_round}
        self._round[f"{phase}_sampled"] = list(node_ids)

    def accepts(self, server_round: int, phase: str, reply: Message) -> bool:
        """Whether a reply came in time: its own seconds plus its injected delay.

        The clock is the client's, not the server's: in a simulation, clients wait for a
        free Ray actor and the first round starts the actors, and neither is the
        client's lateness. Error replies are left to the strategy (it drops them).
        """
        if self.deadline is None or reply.has_error():
            return True
        metrics = reply.content.get("metrics") if "metrics" in reply.content else None
        if metrics is None:
            return True
        taken = time_taken(metrics)
        if taken <= self.deadline:
            return True
        self._late.add((server_round, phase, reply.metadata.src_node_id))
        return False

    def on_replies(
        self,
        server_round: int,
        phase: str,
        replies: list[Message],
        aggregated: MetricRecord | None,
    ) -> None:
        """Write one clients.csv row per sampled node; keep the aggregate for the round."""
        rows, replied = [], set()
        for reply in replies:
            node_id = reply.metadata.src_node_id
            replied.add(node_id)
            rows.append(self._client_row(server_round, phase, node_id, reply))
        for node_id in self._round.get(f"{phase}_sampled", []):
            if node_id not in replied:  # timed out: no reply at all
                rows.append(self._failed_row(server_round, phase, node_id, "no reply"))
        self.writer.clients.append(rows)
        ok = sum(row["status"] == "ok" for row in rows)
        self._round[f"{phase}_replies"] = ok
        self._round[f"{phase}_failures"] = len(rows) - ok
        for key, value in (aggregated or {}).items():
            if key not in BOOKKEEPING:
                self._round[f"{phase}_{key.replace('-', '_')}"] = value

    # --- server side ---------------------------------------------------------------
    def end_round(
        self, server_round: int, server_metrics: Mapping[str, float] | None, status: str = "ok",
        client_level_epsilon: float | None = None,
    ) -> dict[str, Any]:
        """Write the rounds.csv row of ``server_round`` (0 = the initial model).

        ``epsilon`` is the round's headline: the client-level epsilon where DP-FedAvg
        accounts one (``client_level_epsilon``), else the largest sample-level one
        (``epsilon_max``); ``epsilon_level`` says which, ``delta`` at what delta.
        """
        row = {k: v for k, v in self._round.items() if not k.endswith("_sampled")}
        if server_round == 0:  # the initial model: no client took part
            row = dict.fromkeys(("train_replies", "train_failures", "evaluate_replies",
                                 "evaluate_failures"), 0)
        elif status == "ok" and row.get("train_replies", 0) < self.min_replies:
            status = "skipped"  # too few replies: the global model was kept
        row.update({"run_id": self.run_id, "round": server_round, "status": status})
        for key, value in (server_metrics or {}).items():
            row[f"server_{key}"] = value
        if self._epsilons and server_round > 0:
            row["epsilon_max"] = max(self._epsilons.values())
        if server_round > 0 and (client_level_epsilon is not None or "epsilon_max" in row):
            client = client_level_epsilon is not None
            row["epsilon"] = client_level_epsilon if client else row["epsilon_max"]
            row["epsilon_level"] = "client" if client else "sample"
            row["delta"] = "" if self.delta is None else self.delta
        row["seconds"] = round(time.perf_counter() - self._started, 4) if server_round else ""
        known = set(self.writer.rounds.columns)
        self.writer.rounds.append([{k: v for k, v in row.items() if k in known}])
        self._round = {}
        if self.on_round:
            self.on_round(row)
        return row

    # --- checkpoint (fl_sim.checkpoint.StateProvider) ---------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue the rows: epsilons and node partitions."""
        return {"epsilons": dict(self._epsilons), "partition_of": dict(self._partition_of)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a checkpoint: ``epsilon_max`` goes on from the saved epsilons."""
        self._epsilons = dict(state["epsilons"])
        self._partition_of = dict(state["partition_of"])

    # --- rows ----------------------------------------------------------------------
    def _client_row(
        self, server_round: int, phase: str, node_id: int, reply: Message
    ) -> dict[str, Any]:
        if reply.has_error():
            return self._failed_row(server_round, phase, node_id, reply.error.reason)
        metrics = dict(reply.content["metrics"])
        partition = int(metrics.pop(PARTITION_ID))
        self._partition_of[node_id] = partition
        if (server_round, phase, node_id) in self._late:
            return self._failed_row(
                server_round, phase, node_id,
                f"late: {time_taken(metrics):.2f} s > --round-timeout {self.deadline:g} s")
        row = {
            "run_id": self.run_id,
            "round": server_round,
            "phase": phase,
            "partition_id": partition,
            "node_id": node_id,
            "num_examples": int(metrics.pop(NUM_EXAMPLES)),
            "seconds": round(float(metrics.pop(SECONDS)), 4),
            "status": "ok",
        }
        if "epsilon" in metrics:
            self._epsilons[partition] = float(metrics["epsilon"])
        elif partition in self._epsilons:  # evaluation spends nothing: what is spent so far
            metrics["epsilon"] = self._epsilons[partition]
        if "epsilon" in metrics and self.delta is not None:
            metrics["delta"] = self.delta
        known = set(self.writer.clients.columns)
        row.update({k.replace("-", "_"): v for k, v in metrics.items()})
        return {k: v for k, v in row.items() if k in known}

    def _failed_row(
        self, server_round: int, phase: str, node_id: int, reason: str
    ) -> dict[str, Any]:
        LOG.warning("round %s %s: node %s failed: %s", server_round, phase, node_id,
                    reason.splitlines()[-1][-300:] if reason else reason)
        partition = self._partition_of.get(node_id, faulted_partition(reason))
        return {
            "run_id": self.run_id,
            "round": server_round,
            "phase": phase,
            "partition_id": "" if partition is None else partition,
            "node_id": node_id,
            "num_examples": 0,
            "status": "failed",
        }
