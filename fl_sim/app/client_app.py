"""Flower ClientApp: thin glue between Flower messages and the selected task.

Arrays and config come in; ``task.train``/``task.evaluate`` run; arrays and one
MetricRecord (task metrics plus ``num-examples``, ``partition-id`` and ``seconds``) go
out. Per-client state that must outlive a round (e.g. a DP accountant) lives in
``context.state``, which Flower keeps for each node across rounds.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fl_sim.app.client_mods import metrics_mod, privacy_mod
from fl_sim.app.client_state import export_state, restore_state
from fl_sim.app.faults import fault_mod
from fl_sim.app.frozen import frozen_of
from fl_sim.app.he_client import decrypt_sum, he_mod
from fl_sim.app.settings import settings_of
from fl_sim.app.warm import match_ray_threads
from fl_sim.options import RunConfig
from fl_sim.record import logs
from fl_sim.record.recorder import NUM_EXAMPLES, PARTITION_ID, SECONDS
from strategies.he import SUM_KEY
from tasks import registry as task_registry
from tasks.base import Partition, Task, Workspace

# This client process's terminal logging, at the CLI's level, with the known library noise
# held back (fl_sim.record.logs): among it Flower's "Manually terminating ClientAppActor",
# which reaches the run's terminal while the run writes its report.
logs.configure()

# Outermost first: injected faults (fl_sim/app/faults.py) fire before any DP/SecAgg+ work;
# he_mod encrypts the (clipped) update under --he; privacy_mod is a no-op unless
# --strategy dp-fedavg or --secagg; metrics_mod, innermost, strips private metrics under
# --client-metrics none.
app = ClientApp(mods=[fault_mod, he_mod, privacy_mod, metrics_mod])


@lru_cache(maxsize=4)
def _task(settings: RunConfig) -> Task:
    # One task object per process and config: data and models load once per actor.
    match_ray_threads()  # before the task's first torch work in this actor
    run_dir = settings.run.run_dir or settings.run.resume
    if run_dir:  # this process's records (held-back warnings too) go to the run's run.log
        logs.attach_run_log(run_dir)
    return task_registry.get(settings.task)(settings,
                                            Workspace(Path(run_dir) if run_dir else None))


def task_for(context: Context) -> Task:
    """Return the (cached) task described by the context's run config."""
    return _task(settings_of(context.run_config))


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


GLUE_STATE = "fl-sim.client"


def count_round(state: RecordDict) -> int:
    """Count this client's successful training rounds in its own state record.

    The count travels in checkpoints like any other client state, so after a resume it
    goes on from where it was: a witness that client state survives, and how many rounds
    a client contributed (what its privacy cost depends on).
    """
    record = state.get(GLUE_STATE) or ConfigRecord({"rounds-trained": 0})
    record["rounds-trained"] = int(record["rounds-trained"]) + 1
    state[GLUE_STATE] = record
    return int(record["rounds-trained"])


def _reply(msg: Message, content: dict, partition: Partition, metrics: dict,
           num_examples: int, started: float) -> Message:
    """The reply: the task's metrics plus bookkeeping; ``seconds`` is the task's own time."""
    record = MetricRecord(
        {
            **{k: float(v) for k, v in metrics.items()},
            NUM_EXAMPLES: num_examples,
            PARTITION_ID: partition.index,
            SECONDS: time.perf_counter() - started,
        }
    )
    return Message(RecordDict({**content, "metrics": record}), reply_to=msg)


class ClientFailure(RuntimeError):
    """A task's error, re-raised with the client's partition, so its failed row names it."""


def _named(partition: Partition, error: Exception) -> ClientFailure:
    return ClientFailure(f"partition {partition.index}: {type(error).__name__}: {error}")


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the task locally from the received global arrays."""
    partition = partition_of(context)
    try:
        return _train(msg, context, partition)
    except Exception as error:
        raise _named(partition, error) from error


def _train(msg: Message, context: Context, partition: Partition) -> Message:
    config = msg.content["config"]
    server_round = int(config["server-round"])
    # Only FedProx sends proximal-mu, and only tasks with frozen arrays receive them (the
    # DCGAN's guide): tasks without those arguments run every other strategy.
    extra = {"proximal_mu": float(config["proximal-mu"])} if "proximal-mu" in config else {}
    frozen = frozen_of(config)
    if frozen is not None:
        extra["frozen"] = frozen
    resumable = settings_of(context.run_config).run.checkpoint_every > 0
    if resumable:  # state saved before a resume comes back once (fl_sim/client_state.py)
        restore_state(msg.content, context.state)
    task = task_for(context)
    started = time.perf_counter()  # the task's own time: building the task is not counted
    result = task.train(
        msg.content["arrays"], partition, context.state, server_round, **extra
    )
    content = {"arrays": result.arrays}
    if resumable:
        count_round(context.state)
        content.update(export_state(context.state))
    return _reply(msg, content, partition, result.metrics, result.num_examples, started)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received global arrays on the client's held-out data."""
    partition = partition_of(context)
    arrays: ArrayRecord = msg.content["arrays"]
    try:
        task = task_for(context)
        started = time.perf_counter()
        result = task.evaluate(arrays, partition)
    except Exception as error:
        raise _named(partition, error) from error
    return _reply(msg, {}, partition, result.metrics, result.num_examples, started)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Decrypt the round's encrypted sum (``--he``), or name this node's partition.

    A resumed server asks for the partition before sending saved state.
    """
    if SUM_KEY in msg.content:
        return decrypt_sum(msg, context)
    partition = partition_of(context)
    return Message(
        RecordDict({"metrics": MetricRecord({PARTITION_ID: partition.index})}), reply_to=msg
    )
