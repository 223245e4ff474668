"""SecAgg+ for a Message-API strategy: the server only learns the sum of client models.

Flower 1.42 ships SecAgg+ as ``flwr.server.workflow.SecAggPlusWorkflow``, written for
the legacy stack (``LegacyContext``, ``configure_fit``/``aggregate_fit``). Its four
stages are public methods taking ``(grid, context, state)``; :class:`SecAggPlus` runs
them unchanged inside ``configure_train`` through a small adapter that plays the legacy
context, strategy and client manager, and hands the wrapped strategy the securely
aggregated model in place of the clients' models, exactly as the legacy workflow hands
it to a legacy strategy (every result carries the aggregate). Clients run Flower's
``secaggplus_mod`` (installed by ``fl_sim.app.client_mods``).

With DP-FedAvg and client-side clipping this is Flower's DP + SecAgg+ composition: the
clients clip, the masked sum hides single updates, the server's DP wrapper adds noise.

Client metrics go through the same secure sum: a client appends each metric that is not
bookkeeping (its losses, accuracies) to the masked vector, scaled by
1 / :data:`METRIC_SCALE` to fit SecAgg+'s clipping range (+-8: metrics up to +-800, to
within 4e-4), and names them in clear. The server splits them off the aggregate before
the wrapped strategy sees it (so DP noise and clipping apply to the model alone) and
reports their weighted mean as the round's train metrics; no single client's metric
reaches it.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import Code, FitIns, FitRes, Parameters, Status, parameters_to_ndarrays
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fl_core.federation import FederationOptions
from fl_core.flower import (
    MAIN_CONFIGS_RECORD,
    MAIN_PARAMS_RECORD,
    SecAggPlusWorkflow,
    WorkflowKey,
    WorkflowState,
    log,
)
from fl_core.flower import recorddict_compat as compat
from fl_core.options import Settings
from strategies.delegating import DelegatingStrategy
from strategies.options import SecAggOptions

UNIFORM_SECAGG_WEIGHT = 1000
"""SecAggPlusWorkflow's default ``max_weight``: weight of each client in a uniform mean."""

ARRAY_KEYS = "fl-sim-array-keys"
SECURE_METRICS = "fl-sim-secure-metrics"
"""Clear entry of a train reply naming, in order, the metrics appended to its vector."""
METRIC_SCALE = 100.0
"""Config entry carrying the model's array names, which legacy ``Parameters`` drop."""


def _named(keys: list[str], ndarrays: list) -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in zip(keys, ndarrays, strict=True)})


@dataclass
class _Proxy:
    node_id: int


@dataclass
class _Legacy:
    """The parts of a ``LegacyContext`` the SecAgg+ stages use, backed by one round."""

    messages: dict[int, Message]
    population: int
    keys: list[str]
    state: RecordDict = field(default_factory=RecordDict)
    results: list[tuple[_Proxy, FitRes]] = field(default_factory=list)
    failures: list[Any] = field(default_factory=list)

    # context.strategy ------------------------------------------------------------
    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: Any):
        """The wrapped strategy's sampled nodes and train config, as legacy FitIns."""
        return [
            (_Proxy(node_id), FitIns(parameters, {**dict(msg.content["config"]),
                                                  ARRAY_KEYS: json.dumps(self.keys)}))
            for node_id, msg in self.messages.items()
        ]

    def aggregate_fit(self, server_round: int, results, failures):
        """Keep the securely aggregated results for the wrapped strategy."""
        self.results, self.failures = list(results), list(failures)
        return (results[0][1].parameters if results else None), {}

    # context.client_manager / context.history / context.strategy share this object
    @property
    def strategy(self) -> _Legacy:
        return self

    @property
    def client_manager(self) -> _Legacy:
        return self

    @property
    def history(self) -> _Legacy:
        return self

    def num_available(self) -> int:
        return self.population

    def add_metrics_distributed_fit(self, server_round: int, metrics: Any) -> None:
        """History is kept by the results writer, not here."""


class SecAggPlus(DelegatingStrategy):
    """Run each train round of ``strategy`` through Flower's SecAgg+ protocol.

    Parameters
    ----------
    strategy : Strategy
        Samples nodes and aggregates (``FedAvg``, a DP wrapper with client-side clipping,
        ...). It receives one reply per surviving client, each carrying that client's
        plaintext metrics and the securely aggregated (weighted mean) model.
    num_shares, reconstruction_threshold : int
        SecAgg+ key shares per client and shares needed to reconstruct a key.
    population : int
        Clients in the federation (for the log line).
    """

    def __init__(self, strategy: Strategy, num_shares: int, reconstruction_threshold: int,
                 population: int) -> None:
        super().__init__(strategy)
        self.workflow = SecAggPlusWorkflow(num_shares, reconstruction_threshold)
        self.population = population
        self.received_replies: dict[int, list[Message]] = {}
        self._aggregated: dict[int, list[Message]] = {}
        self._secure_metrics: dict[int, dict[str, float]] = {}
        self.sampled_nodes: dict[int, list[int]] = {}
        """Each round's sampled nodes: a client that drops out of the protocol is one of
        them without a reply (the recorder writes it as failed)."""

    def summary(self) -> None:
        """Log the wrapped strategy's summary."""
        log(INFO, "\t├──> SecAgg+ (shares %s, threshold %s)", self.workflow.num_shares,
            self.workflow.reconstruction_threshold)
        self.strategy.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Run the whole SecAgg+ round on ``grid``; nothing is left for the default loop."""
        messages = {m.metadata.dst_node_id: m
                    for m in self.strategy.configure_train(server_round, arrays, config, grid)}
        self.sampled_nodes[server_round] = list(messages)
        legacy = _Legacy(messages, self.population, list(arrays.keys()))
        legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
            {WorkflowKey.CURRENT_ROUND: server_round})
        legacy.state.array_records[MAIN_PARAMS_RECORD] = arrays
        state = WorkflowState()
        stages = (self.workflow.setup_stage, self.workflow.share_keys_stage,
                  self.workflow.collect_masked_vectors_stage, self.workflow.unmask_stage)
        completed = all(stage(grid, legacy, state) for stage in stages)
        replies = (self._replies(server_round, legacy, messages, list(arrays.keys()))
                   if completed else [])
        if not completed:
            log(INFO, "SecAgg+ round %s halted: no aggregate", server_round)
        self._aggregated[server_round] = replies
        return []

    def _replies(self, server_round: int, legacy: _Legacy, messages: dict[int, Message],
                 keys: list[str]) -> list[Message]:
        """One reply per surviving client: the model part of the aggregate, clear metrics.

        The securely summed metrics are split off here and kept for :meth:`aggregate_train`.
        """
        replies = []
        for proxy, fitres in legacy.results:
            vector = parameters_to_ndarrays(fitres.parameters)
            clear = dict(fitres.metrics)
            names = json.loads(str(clear.pop(SECURE_METRICS, "[]")))
            if names and server_round not in self._secure_metrics:  # one aggregate per round
                self._secure_metrics[server_round] = {
                    name: float(np.asarray(v).reshape(-1)[0]) * METRIC_SCALE
                    for name, v in zip(names, vector[len(keys):], strict=True)}
            content = RecordDict({"arrays": _named(keys, vector[:len(keys)]),
                                  "metrics": MetricRecord(clear)})
            replies.append(Message(content, reply_to=messages[proxy.node_id]))
        return replies

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Let the wrapped strategy aggregate (noise, accounting) the secure aggregate."""
        secured = self._aggregated.pop(server_round, [])
        secure_metrics = self._secure_metrics.pop(server_round, {})
        self.received_replies[server_round] = secured
        if not secured:
            return None, None
        arrays, metrics = self.strategy.aggregate_train(server_round, secured)
        if secure_metrics:
            metrics = MetricRecord({**dict(metrics or {}), **secure_metrics})
        return arrays, metrics


def legacy_train_reply(reply: Message, uniform: bool, clear: Collection[str] = ()) -> None:
    """Rewrite a ClientApp train reply into the legacy ``fitres`` records SecAgg+ reads.

    ``uniform``: every client weighs ``max_weight`` in the secure sum (DP-FedAvg's
    uniform mean; the mod scales a model by weight / max_weight before its fixed-point
    rounding, so the full weight keeps the most precision), else its ``num-examples``.
    Metrics named in ``clear`` travel in the clear; every other metric is appended to the
    masked vector (see the module docstring).
    """
    metrics = dict(reply.content["metrics"])
    weight = UNIFORM_SECAGG_WEIGHT if uniform else int(metrics.get("num-examples", 1))
    secure = sorted(k for k in metrics if k not in clear)
    record = ArrayRecord(dict(reply.content["arrays"].items()))
    for name in secure:
        value = np.array([float(metrics.pop(name)) / METRIC_SCALE], dtype=np.float32)
        record[f"{SECURE_METRICS}/{name}"] = Array(value)
    if secure:
        metrics[SECURE_METRICS] = json.dumps(secure)
    fitres = FitRes(Status(Code.OK, ""), compat.arrayrecord_to_parameters(
        record, keep_input=True), weight, metrics)
    reply.content = compat.fitres_to_recorddict(fitres, keep_input=True)


def ours_from_legacy_train(msg: Message) -> None:
    """Rewrite a legacy ``fitins`` train message into the ClientApp's arrays + config."""
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    config = dict(fitins.config)
    keys = json.loads(str(config.pop(ARRAY_KEYS)))
    arrays = _named(keys, parameters_to_ndarrays(fitins.parameters))
    msg.content = RecordDict({"arrays": arrays, "config": ConfigRecord(config)})


def wrap_if_asked(strategy: Strategy, settings: Settings) -> Strategy:
    """``strategy`` inside :class:`SecAggPlus` when ``--secagg`` is on."""
    secagg = settings.get(SecAggOptions)
    if not secagg.secagg:
        return strategy
    shares, threshold = secagg.shares_and_threshold(settings)
    return SecAggPlus(strategy, shares, threshold, settings.get(FederationOptions).clients)
