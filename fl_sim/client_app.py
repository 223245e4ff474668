"""Flower ClientApp: thin glue between Flower messages and the selected task.

Arrays and config come in; ``task.train``/``task.evaluate`` run; arrays and one
MetricRecord (task metrics plus ``num-examples``, ``partition-id`` and ``seconds``) go
out. Per-client state that must outlive a round (e.g. a DP accountant) lives in
``context.state``, which Flower keeps for each node across rounds.
"""

from __future__ import annotations

import time
from functools import lru_cache

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fl_sim.config import RunConfig
from fl_sim.faults import fault_mod
from fl_sim.recorder import NUM_EXAMPLES, PARTITION_ID, SECONDS
from tasks import registry as task_registry
from tasks.base import Partition, Task

app = ClientApp(mods=[fault_mod])  # --fail-rate/--straggler-*: fl_sim/faults.py


@lru_cache(maxsize=4)
def _task(frozen_config: tuple[tuple[str, object], ...]) -> Task:
    # One task object per process and config: data and models load once per actor.
    config = RunConfig.from_mapping(dict(frozen_config)).to_run_config()
    return task_registry.get(config["task"])(config)


def task_for(context: Context) -> Task:
    """Return the (cached) task described by the context's run config."""
    return _task(tuple(sorted(context.run_config.items())))


def partition_of(context: Context) -> Partition:
    """Read ``partition-id``/``num-partitions`` from the node config."""
    try:
        return Partition(
            int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
        )
    except KeyError as missing:
        raise ValueError(
            f"node config lacks {missing}; start SuperNodes with "
            "--node-config 'partition-id=<i> num-partitions=<n>'"
        ) from None


def _reply(msg: Message, content: dict, partition: Partition, metrics: dict,
           num_examples: int, started: float) -> Message:
    record = MetricRecord(
        {
            **{k: float(v) for k, v in metrics.items()},
            NUM_EXAMPLES: num_examples,
            PARTITION_ID: partition.index,
            SECONDS: time.perf_counter() - started,
        }
    )
    return Message(RecordDict({**content, "metrics": record}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the task locally from the received global arrays."""
    started = time.perf_counter()
    partition = partition_of(context)
    server_round = int(msg.content["config"]["server-round"])
    result = task_for(context).train(
        msg.content["arrays"], partition, context.state, server_round
    )
    return _reply(
        msg, {"arrays": result.arrays}, partition, result.metrics, result.num_examples, started
    )


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received global arrays on the client's held-out data."""
    started = time.perf_counter()
    partition = partition_of(context)
    arrays: ArrayRecord = msg.content["arrays"]
    result = task_for(context).evaluate(arrays, partition)
    return _reply(msg, {}, partition, result.metrics, result.num_examples, started)
