"""Fault injection: seeded draws, the ClientApp mod, and the quorum wrapper."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict

from fl_sim.app.faults import FaultPlan, InjectedFault, fault_mod
from fl_sim.record.recorder import faulted_partition
from strategies.quorum import Quorum


def test_same_seed_same_faults_other_seed_other_faults():
    a, b, c = FaultPlan(3, 0.25), FaultPlan(3, 0.25), FaultPlan(4, 0.25)
    grid = [(r, p) for r in range(1, 21) for p in range(50)]
    fails_a = [a.fails(r, p) for r, p in grid]
    assert fails_a == [b.fails(r, p) for r, p in grid]
    assert fails_a != [c.fails(r, p) for r, p in grid]


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 1.0])
def test_failure_frequency_matches_rate(rate):
    plan = FaultPlan(11, rate)
    draws = [plan.fails(r, p) for r in range(1, 101) for p in range(100)]
    # 10,000 Bernoulli(rate) draws: 4 standard deviations is at most 0.02.
    assert np.mean(draws) == pytest.approx(rate, abs=0.02)


def test_straggler_draws_do_not_change_who_fails():
    quiet, slow = FaultPlan(5, 0.3), FaultPlan(5, 0.3, straggler_rate=0.9, straggler_seconds=2)
    grid = [(r, p) for r in range(1, 11) for p in range(30)]
    assert [quiet.fails(*g) for g in grid] == [slow.fails(*g) for g in grid]
    delays = [slow.delay(*g) for g in grid]
    assert set(delays) == {0.0, 2.0}
    assert np.mean([d > 0 for d in delays]) == pytest.approx(0.9, abs=0.06)
    assert FaultPlan(5, 0, straggler_rate=1.0, straggler_seconds=0).active is False


def _message(kind: str, server_round: int) -> SimpleNamespace:
    # Only what the mod reads (a real Message needs a running Flower task identity).
    content = RecordDict({"arrays": ArrayRecord(),
                          "config": ConfigRecord({"server-round": server_round})})
    return SimpleNamespace(content=content, metadata=SimpleNamespace(message_type=kind))


def _context(partition: int, **run_config) -> Context:
    return Context(run_id=1, node_id=1,
                   node_config={"partition-id": partition, "num-partitions": 3},
                   state=RecordDict(), run_config={"seed": 3, **run_config})


def test_mod_raises_exactly_where_the_plan_says():
    plan = FaultPlan(3, 0.25)
    calls = []

    def call_next(msg, ctx):
        calls.append(1)
        return _metrics_reply()

    for server_round in range(1, 5):
        for partition in range(3):
            for kind in ("train", "evaluate"):
                ctx = _context(partition, **{"fail-rate": 0.25})
                if plan.fails(server_round, partition):
                    with pytest.raises(InjectedFault, match=f"partition {partition}") as error:
                        fault_mod(_message(kind, server_round), ctx, call_next)
                    assert faulted_partition(str(error.value)) == partition
                else:
                    fault_mod(_message(kind, server_round), ctx, call_next)
    expected = sum(not plan.fails(r, p) for r in range(1, 5) for p in range(3)) * 2
    assert len(calls) == expected and expected < 24  # seed 3 fails someone


def _metrics_reply() -> SimpleNamespace:
    content = RecordDict({"metrics": MetricRecord({"seconds": 0.1})})
    return SimpleNamespace(content=content, has_error=lambda: False)


def test_mod_stamps_stragglers_without_sleeping_and_passes_query_messages():
    plan = FaultPlan(3, straggler_rate=0.5, straggler_seconds=4.0)
    for partition in range(3):
        ctx = _context(partition, **{"straggler-rate": 0.5, "straggler-seconds": 4.0})
        started = time.perf_counter()
        reply = fault_mod(_message("train", 1), ctx, lambda m, c: _metrics_reply())
        assert time.perf_counter() - started < 0.5  # no actor is held up
        assert reply.content["metrics"]["injected-delay"] == plan.delay(1, partition)
    assert [plan.delay(1, p) for p in range(3)] == [4.0, 0.0, 4.0]  # seed 3, round 1
    passed = fault_mod(_message("query", 1), _context(0, **{"fail-rate": 1.0}),
                       lambda m, c: "untouched")
    assert passed == "untouched"


def test_faulted_partition_reads_injected_faults_and_named_task_errors():
    reason = "ray ... injected failure (fail-rate 0.5) in round 2, partition 17\n"
    assert faulted_partition(reason) == 17
    assert faulted_partition("ClientAppException: partition 4: ValueError: nan") == 4
    assert faulted_partition("ValueError: partition 3 is outside 0..2") is None
    assert faulted_partition(None) is None


class _Inner:
    def __init__(self):
        self.aggregated = []

    def aggregate_train(self, server_round, replies):
        self.aggregated.append((server_round, len(replies)))
        return ArrayRecord(), MetricRecord({"loss": 1.0})


def _reply(ok: bool) -> SimpleNamespace:
    return SimpleNamespace(has_error=lambda: not ok)


def test_quorum_skips_rounds_with_too_few_successes():
    inner = _Inner()
    quorum = Quorum(inner, min_replies=2)
    assert quorum.aggregate_train(1, [_reply(True), _reply(False), _reply(False)]) == (None, None)
    arrays, metrics = quorum.aggregate_train(2, [_reply(True), _reply(True), _reply(False)])
    assert metrics["loss"] == 1.0
    assert quorum.skipped == [1] and inner.aggregated == [(2, 3)]
    with pytest.raises(ValueError):
        Quorum(inner, min_replies=0)
