"""RunRecorder + RecordingStrategy: replies become rows, failures and timeouts included."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from flwr.app import ArrayRecord, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from fl_core.flower import TaskIdentity
from fl_sim.record.recorder import RunRecorder
from fl_sim.record.results import ResultsWriter
from strategies.recording import RecordingStrategy


@pytest.fixture(autouse=True)
def _identity():
    # Flower stamps the running task's identity into every Message it builds.
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 5, 1


def _sent(node_id: int) -> Message:
    return Message(RecordDict({"arrays": ArrayRecord()}), message_type=MessageType.TRAIN,
                   dst_node_id=node_id)


def _ok(node_id: int, partition: int, loss: float, n: int) -> Message:
    metrics = MetricRecord({"loss": loss, "prediction_at_5": 9.0, "num-examples": n,
                            "partition-id": partition, "seconds": 0.25})
    arrays = ArrayRecord([np.full((1,), float(partition))])
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=_sent(node_id))


def _failed(node_id: int) -> Message:
    return Message(Error(code=0, reason="boom"), reply_to=_sent(node_id))


def test_rows_for_ok_failed_and_missing_replies(tmp_path):
    writer = ResultsWriter(tmp_path, ["loss", "prediction_at_5"], ["loss"])
    seen = []
    recorder = RunRecorder(writer, "run", on_round=seen.append)
    strategy = RecordingStrategy(FedAvg(), recorder)
    # Round 1: nodes 11, 12 reply; round 2: 11 fails, 12 ok, 13 never answers.
    recorder.on_configure(1, "train", [11, 12])
    arrays, metrics = strategy.aggregate_train(1, [_ok(11, 0, 1.0, 10), _ok(12, 1, 3.0, 30)])
    recorder.end_round(1, {"loss": 0.5})
    recorder.on_configure(2, "train", [11, 12, 13])
    strategy.aggregate_train(2, [_failed(11), _ok(12, 1, 2.0, 30)])
    recorder.end_round(2, {"loss": 0.4})
    writer.close()

    assert metrics["loss"] == pytest.approx((1.0 * 10 + 3.0 * 30) / 40)
    assert arrays.to_numpy_ndarrays()[0][0] == pytest.approx(30 / 40)
    clients = pd.read_csv(tmp_path / "clients.csv")
    assert list(clients["status"]) == ["ok", "ok", "failed", "ok", "failed"]
    failed = clients[clients["status"] == "failed"]
    # Node 11 was partition 0 in round 1; node 13 was never seen, so its partition is empty.
    assert failed["partition_id"].tolist()[0] == 0 and pd.isna(failed["partition_id"].tolist()[1])
    assert set(failed["node_id"]) == {11, 13}
    rounds = pd.read_csv(tmp_path / "rounds.csv")
    assert rounds["train_replies"].tolist() == [2, 1]
    assert rounds["train_failures"].tolist() == [0, 2]
    assert rounds["train_loss"].tolist() == pytest.approx([2.5, 2.0])
    assert rounds["server_loss"].tolist() == [0.5, 0.4]
    assert [row["round"] for row in seen] == [1, 2]


def test_recording_strategy_leaves_the_wrapped_strategy_in_charge():
    inner = FedAvg(fraction_train=0.3)
    wrapped = RecordingStrategy(inner, RunRecorder.__new__(RunRecorder))
    assert wrapped.fraction_train == 0.3  # attributes reach through


@pytest.mark.parametrize(("client_level", "level", "headline"), [
    (None, "sample", 2.5), (0.75, "client", 0.75)])
def test_each_round_row_carries_the_headline_epsilon_and_its_delta(tmp_path, client_level,
                                                                  level, headline):
    writer = ResultsWriter(tmp_path, [], ["loss"], sample_dp=True,
                           client_dp=client_level is not None)
    recorder = RunRecorder(writer, "run", delta=1e-5)
    recorder._epsilons = {0: 1.5, 1: 2.5}  # the clients' sample-level epsilons so far
    row = recorder.end_round(1, {"loss": 0.1}, client_level_epsilon=client_level)
    writer.close()
    assert (row["epsilon"], row["epsilon_level"], row["delta"]) == (headline, level, 1e-5)
    assert row["epsilon_max"] == 2.5
    written = pd.read_csv(tmp_path / "rounds.csv").iloc[0]
    assert written["epsilon"] == headline and written["epsilon_level"] == level


def test_no_epsilon_columns_without_privacy(tmp_path):
    writer = ResultsWriter(tmp_path, [], ["loss"])
    row = RunRecorder(writer, "run", delta=1e-5).end_round(1, {"loss": 0.1})
    writer.close()
    assert "epsilon" not in row and "epsilon_level" not in row


def test_evaluate_rows_carry_the_epsilon_spent_so_far_and_round_zero_counts_are_zero(tmp_path):
    writer = ResultsWriter(tmp_path, ["loss"], ["loss"], sample_dp=True)
    recorder = RunRecorder(writer, "run", delta=1e-5)
    recorder.end_round(0, {"loss": 1.0})
    strategy = RecordingStrategy(FedAvg(), recorder)
    recorder.on_configure(1, "train", [11])
    train = MetricRecord({"loss": 0.5, "num-examples": 10, "partition-id": 0, "seconds": 0.1,
                          "epsilon": 1.25, "noise_multiplier": 1.1, "sample_rate": 0.1,
                          "dp_steps": 10})
    strategy.aggregate_train(1, [Message(RecordDict({"arrays": ArrayRecord([np.ones(1)]),
                                                     "metrics": train}), reply_to=_sent(11))])
    recorder.on_configure(1, "evaluate", [11])
    evaluation = MetricRecord({"loss": 0.4, "num-examples": 5, "partition-id": 0,
                               "seconds": 0.1})
    strategy.aggregate_evaluate(1, [Message(RecordDict({"metrics": evaluation}),
                                            reply_to=_sent(11))])
    recorder.end_round(1, {"loss": 0.3})
    writer.close()
    clients = pd.read_csv(tmp_path / "clients.csv").set_index("phase")
    assert clients.loc["evaluate", "epsilon"] == clients.loc["train", "epsilon"] == 1.25
    assert clients["delta"].tolist() == [1e-5, 1e-5]
    assert clients.loc["train", ["noise_multiplier", "sample_rate", "dp_steps"]].tolist() \
        == [1.1, 0.1, 10]
    rounds = pd.read_csv(tmp_path / "rounds.csv")
    assert rounds["train_replies"].tolist() == [0, 1]
    assert rounds["train_replies"].dtype.kind == "i"  # counts read back as integers
    assert "train_noise_multiplier" not in rounds  # per client, not averaged
