"""Client state across a resume: collected from replies, checkpointed, sent back once."""

from __future__ import annotations

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fl_core.flower import TaskIdentity
from fl_sim.app.client_state import PREFIX, ClientStates, export_state, restore_state
from fl_sim.run import checkpoint


@pytest.fixture(autouse=True)
def _flower_task_identity():
    # Messages are built inside a running ServerApp; give them the identity one would have.
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    yield


def _accountant(steps: int) -> ConfigRecord:
    return ConfigRecord({"steps": steps, "noise": 1.1})


class Inner:
    """Samples the given nodes; records what it aggregates."""

    def __init__(self, nodes):
        self.nodes = nodes
        self.aggregated = []

    def configure_train(self, server_round, arrays, config, grid):
        record = RecordDict({"arrays": arrays, "config": config})
        return [Message(content=record, message_type="train", dst_node_id=n) for n in self.nodes]

    def aggregate_train(self, server_round, replies):
        self.aggregated.append([set(r.content.keys()) for r in replies])
        return None, None


class Grid:
    """Answers partition queries with node_id - 100 and counts them."""

    def __init__(self):
        self.queried = []

    def send_and_receive(self, messages, timeout=None):
        replies = []
        for message in messages:
            self.queried.append(message.metadata.dst_node_id)
            replies.append(_reply(message, partition=message.metadata.dst_node_id - 100))
        return replies


def _reply(request: Message, partition: int, state: RecordDict | None = None) -> Message:
    request.metadata.__dict__["_message_id"] = f"m{request.metadata.dst_node_id}"
    content = {"metrics": MetricRecord({"partition-id": partition, "num-examples": 1})}
    content.update(export_state(state or RecordDict()))
    reply = Message(RecordDict(content), reply_to=request)
    reply.metadata.__dict__["_src_node_id"] = request.metadata.dst_node_id
    return reply


def test_export_and_restore_only_into_an_empty_state():
    state = RecordDict({"accountant": _accountant(7)})
    exported = export_state(state)
    assert list(exported) == [f"{PREFIX}accountant"]
    fresh = RecordDict()
    assert restore_state(RecordDict(exported), fresh) == 1
    assert fresh["accountant"]["steps"] == 7
    kept = RecordDict({"accountant": _accountant(9)})
    assert restore_state(RecordDict(exported), kept) == 0
    assert kept["accountant"]["steps"] == 9


def test_states_are_collected_stripped_checkpointed_and_sent_back_once(tmp_path):
    inner = Inner([101, 102])
    before = ClientStates(inner)
    messages = list(before.configure_train(1, ArrayRecord(), ConfigRecord(), Grid()))
    replies = [_reply(messages[0], 1, RecordDict({"accountant": _accountant(10)})),
               _reply(messages[1], 2, RecordDict({"accountant": _accountant(20)}))]
    before.aggregate_train(1, replies)
    assert inner.aggregated == [[{"metrics"}, {"metrics"}]]  # state never reaches FedAvg
    assert before.states[2]["accountant"]["steps"] == 20

    saver = checkpoint.Checkpointer(tmp_path, 1, 4, {"client-states": before})
    saver.after_round(1, ArrayRecord())
    after = ClientStates(Inner([103, 102]))  # resumed: new process, node 103 is new
    checkpoint.Checkpointer(tmp_path, 1, 4, {"client-states": after}).restore(
        checkpoint.load(tmp_path))
    grid = Grid()
    sent = list(after.configure_train(2, ArrayRecord(), ConfigRecord(), grid))
    assert grid.queried == [103, 102]  # only sampled nodes, only once
    assert f"{PREFIX}accountant" not in sent[0].content  # partition 3 never trained
    assert sent[1].content[f"{PREFIX}accountant"]["steps"] == 20
    client = RecordDict()
    assert restore_state(sent[1].content, client) == 1 and client["accountant"]["steps"] == 20
    # Until the client replies successfully the state is sent again (it may have failed
    # before restoring it); nobody is asked twice for a partition.
    again = list(after.configure_train(3, ArrayRecord(), ConfigRecord(), grid))
    assert grid.queried == [103, 102]
    assert again[1].content[f"{PREFIX}accountant"]["steps"] == 20
    after.aggregate_train(3, [_reply(again[1], 2, client)])
    last = list(after.configure_train(4, ArrayRecord(), ConfigRecord(), grid))
    assert all(not any(k.startswith(PREFIX) for k in m.content) for m in last)
