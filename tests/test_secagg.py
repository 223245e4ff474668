"""SecAgg+ in-process: Flower's protocol stages, Flower's client mod, our adapters.

A grid that delivers each message straight to an in-process client (with its own
persistent context state) runs the four SecAgg+ stages; the securely aggregated model
must equal what plain FedAvg computes from the same client models.
"""

from __future__ import annotations

import contextlib
import copy
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from fl_sim.app.client_mods import privacy_mod
from fl_sim.options import RunConfig
from strategies import registry
from strategies.secagg import SecAggPlus
from tests.fakes import FakeGrid, arrays, reply, task_identity

RNG = np.random.default_rng(7)
MODELS = {node: [RNG.normal(0, 1, (3, 4)), RNG.normal(0, 1, 4)] for node in range(1, 5)}
EXAMPLES = {1: 10, 2: 30, 3: 20, 4: 40}


class ClientsGrid(FakeGrid):
    """Delivers messages to in-process clients running ``privacy_mod`` around a trainer."""

    def __init__(self, n: int, run_config: dict) -> None:
        super().__init__(n)
        self.contexts = {
            node: SimpleNamespace(run_config=run_config, state=RecordDict())
            for node in self.get_node_ids()
        }
        self.trained: list[int] = []

    def train(self, msg: Message, context) -> Message:
        node = msg.metadata.dst_node_id
        self.trained.append(node)
        assert list(msg.content["arrays"].keys()) == ["p0", "p1"]  # names survive legacy
        content = RecordDict({
            "arrays": arrays(*MODELS[node]),
            "metrics": MetricRecord({"num-examples": EXAMPLES[node], "loss": float(node),
                                     "partition-id": node - 1, "seconds": 0.1}),
        })
        return Message(content, reply_to=msg)

    def send_and_receive(self, messages, *, timeout=None):
        # A copy per client, as a real transport delivers (the workflow shares records).
        return [privacy_mod(copy.deepcopy(m), self.contexts[m.metadata.dst_node_id],
                            self.train) for m in messages]


def quantisation_tolerance(weights) -> float:
    """Worst-case error of SecAgg+'s fixed point: each client scales its model by
    weight / max_weight (1000), rounds to a step of 2 * 8 / 2^22 (clipping range 8,
    quantisation range 2^22); the server divides the sum by the summed scale."""
    weights = list(weights)
    step = 2 * 8.0 / 2**22
    return len(weights) * step / (sum(weights) / 1000.0)


@pytest.fixture(autouse=True)
def _identity():
    task_identity()


def build(**overrides):
    config = RunConfig.from_mapping({"clients": 4, "secagg": True, **overrides})
    return config, registry.build_for_run(config)


def test_secagg_aggregate_equals_plain_fedavg_on_the_same_updates():
    config, strategy = build()
    assert isinstance(strategy, SecAggPlus)
    grid = ClientsGrid(4, config.to_run_config())
    current = arrays(np.zeros((3, 4)), np.zeros(4))
    assert list(strategy.configure_train(1, current, ConfigRecord(), grid)) == []
    secure, metrics = strategy.aggregate_train(1, [])
    assert sorted(grid.trained) == [1, 2, 3, 4]

    _, plain_strategy = build(secagg=False)
    plain_replies = [
        reply(m, arrays(*MODELS[m.metadata.dst_node_id]), EXAMPLES[m.metadata.dst_node_id],
              loss=float(m.metadata.dst_node_id))
        for m in plain_strategy.configure_train(1, current, ConfigRecord(), FakeGrid(4))
    ]
    plain, plain_metrics = plain_strategy.aggregate_train(1, plain_replies)
    for got, want in zip(secure.to_numpy_ndarrays(), plain.to_numpy_ndarrays(), strict=True):
        np.testing.assert_allclose(got, want, atol=quantisation_tolerance(EXAMPLES.values()))
    # The loss went through the secure sum (scaled by 1/100: quantisation x 100).
    assert plain_metrics["loss"] == pytest.approx(2.9)  # (10*1 + 30*2 + 20*3 + 40*4) / 100
    assert metrics["loss"] == pytest.approx(
        plain_metrics["loss"], abs=100 * quantisation_tolerance(EXAMPLES.values()))
    # The recorder gets one reply per client, with no single client's loss.
    received = strategy.received_replies.pop(1)
    assert len(received) == 4
    assert all(set(r.content["metrics"]) == {"num-examples", "partition-id", "seconds"}
               for r in received)


def test_secagg_under_client_metrics_none_sends_no_metric_at_all():
    from fl_sim.app.client_mods import metrics_mod

    config, strategy = build(**{"client-metrics": "none"})
    grid = ClientsGrid(4, config.to_run_config())
    trainer = grid.train
    grid.train = lambda msg, ctx: metrics_mod(msg, ctx, trainer)
    current = arrays(np.zeros((3, 4)), np.zeros(4))
    strategy.configure_train(1, current, ConfigRecord(), grid)
    secure, metrics = strategy.aggregate_train(1, [])
    assert len(secure) == 2 and "loss" not in (metrics or {})


def test_secagg_with_client_clipping_dp_fedavg_clips_then_sums_then_noises():
    config, strategy = build(**{"strategy": "dp-fedavg", "dp-clipping": "client",
                                "clipping-norm": 0.5, "server-noise-multiplier": 1e-6})
    grid = ClientsGrid(4, config.to_run_config())
    current = arrays(np.zeros((3, 4)), np.zeros(4))
    strategy.configure_train(1, current, ConfigRecord(), grid)
    secure, _ = strategy.aggregate_train(1, [])

    def clipped(node):
        flat = np.concatenate([a.ravel() for a in MODELS[node]])
        scale = min(1.0, 0.5 / np.linalg.norm(flat))
        return [a * scale for a in MODELS[node]]

    # Uniform mean of the clipped updates (DP-FedAvg ignores num-examples).
    want = [np.mean([clipped(n)[i] for n in MODELS], axis=0) for i in range(2)]
    for got, expected in zip(secure.to_numpy_ndarrays(), want, strict=True):
        np.testing.assert_allclose(got, expected, atol=quantisation_tolerance([1000] * 4))
    row = strategy.privacy_row(1)
    assert row["status"] == "released" and row["accountant"] == "flower-rdp"


def test_a_client_that_drops_out_of_secagg_is_a_failed_row(tmp_path):
    from fl_sim.record.recorder import RunRecorder
    from fl_sim.record.results import ResultsWriter
    from strategies.recording import RecordingStrategy

    config, strategy = build(**{"secagg-shares": 4, "secagg-threshold": 2})
    grid = ClientsGrid(4, config.to_run_config())
    trainer = grid.train

    def node_4_drops(msg, context):  # gone after the key exchange, before its vector
        if msg.metadata.dst_node_id == 4:
            raise ConnectionError("node 4 dropped out")
        return trainer(msg, context)

    grid.train = node_4_drops
    delivered = grid.send_and_receive

    def dropping(messages, *, timeout=None):
        replies = []
        for m in messages:
            with contextlib.suppress(ConnectionError):  # a dropout: no reply at all
                replies.extend(delivered([m]))
        return replies

    grid.send_and_receive = dropping
    writer = ResultsWriter(tmp_path, (), ())
    recorder = RunRecorder(writer, "run")
    recording = RecordingStrategy(strategy, recorder)
    current = arrays(np.zeros((3, 4)), np.zeros(4))
    recording.configure_train(1, current, ConfigRecord(), grid)
    secure, _ = recording.aggregate_train(1, [])
    writer.close()
    assert secure is not None  # 3 of 4 above the threshold: the round completes
    rows = pd.read_csv(tmp_path / "clients.csv")
    assert sorted(rows["node_id"]) == [1, 2, 3, 4]
    status = dict(zip(rows["node_id"], rows["status"], strict=True))
    assert status == {1: "ok", 2: "ok", 3: "ok", 4: "failed"}


@pytest.mark.parametrize(("secagg", "kept"), [(True, {"num-examples"}),
                                              (False, {"num-examples", "loss"})])
def test_evaluation_replies_carry_no_private_metric_under_secagg(secagg, kept):
    from fl_sim.app.client_mods import metrics_mod

    config, _ = build(secagg=secagg)
    context = SimpleNamespace(run_config=config.to_run_config(), state=RecordDict())
    msg = SimpleNamespace(metadata=SimpleNamespace(message_type="evaluate"))

    def evaluate(m, c):
        content = RecordDict({"metrics": MetricRecord({"num-examples": 5, "loss": 0.3})})
        return SimpleNamespace(content=content, has_error=lambda: False)

    reply = metrics_mod(msg, context, evaluate)
    assert set(reply.content["metrics"]) == kept
