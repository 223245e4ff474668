"""In-process stand-ins for a Flower round: a grid of node ids and client replies.

They let unit tests drive a real Flower strategy (sampling, clipping, noise,
accounting) without Ray or a SuperLink.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fl_core.flower import TaskIdentity


def task_identity() -> None:
    """Flower's Message needs a task identity; the legacy Python API sets a dummy one."""
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = 1
    TaskIdentity.node_id = 0


class FakeGrid:
    """All ``n`` nodes connected; only what FedAvg's sampling asks of a Grid."""

    def __init__(self, n: int) -> None:
        self.n = n

    def get_node_ids(self) -> list[int]:
        return list(range(1, self.n + 1))


def arrays(*values: np.ndarray) -> ArrayRecord:
    """An ArrayRecord with one float32 array per value, keys ``p0``, ``p1``, ..."""
    return ArrayRecord(
        {f"p{i}": Array(np.asarray(v, dtype=np.float32)) for i, v in enumerate(values)}
    )


def reply(to: Message, record: ArrayRecord, examples: int = 10, **metrics: float) -> Message:
    """A client's train reply carrying ``record`` and a MetricRecord (uniform DP weight)."""
    content = RecordDict({
        "arrays": record,
        "metrics": MetricRecord({"num-examples": examples, "dp-weight": 1.0, **metrics}),
    })
    return Message(content, reply_to=to)


def run_round(strategy, server_round: int, current: ArrayRecord, grid: FakeGrid, updates):
    """Configure a train round and aggregate ``updates(node_id) -> ArrayRecord`` replies."""
    messages = list(strategy.configure_train(server_round, current, ConfigRecord(), grid))
    replies = [reply(m, updates(m.metadata.dst_node_id)) for m in messages]
    return messages, strategy.aggregate_train(server_round, replies)
