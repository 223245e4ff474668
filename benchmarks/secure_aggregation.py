"""What hiding single updates costs per round: plain FedAvg, SecAgg+ and CKKS (``--he``).

For each task's real global model, one process runs the real strategy a run would use
(``strategies.registry.build_for_run``) and the real ClientApp mods (``he_mod``,
``privacy_mod`` with Flower's ``secaggplus_mod``) around a stand-in trainer that returns
the model plus a small seeded change, so the figures are the aggregation's alone, not
training's. It counts the bytes of every message and reply as Flower serialises them
(protobuf) and times the whole round (configure, client encryption or masking,
aggregation, decryption). All modes and tasks are measured in this one run.

Usage::

    PYTHONPATH=. python benchmarks/secure_aggregation.py --clients 3 --rounds 2
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TASKS = {
    "regression": {"task": "regression"},
    "classifier": {"task": "classifier", "dp": False},
    "dcgan": {"task": "dcgan", "gan-public-prior": "none", "dp": False},
}
MODES = {"plain": {}, "secagg": {"secagg": True}, "he": {"he": True}}


def model_of(settings: dict):
    """The task's initial global model (the public prior skipped: same shapes)."""
    from fl_sim.options import RunConfig
    from tasks import registry

    config = RunConfig.from_mapping(settings)
    return registry.get(config.task)(config).initial_arrays()


class MeasuringGrid:
    """Delivers each message through the ClientApp's mods to a stand-in trainer."""

    def __init__(self, clients: int, run_config: dict, model) -> None:
        from flwr.app import RecordDict

        self.ids = list(range(1, clients + 1))
        self.contexts = {n: SimpleNamespace(run_config=run_config, state=RecordDict(),
                                            node_id=n) for n in self.ids}
        self.model = model
        self.sent = self.received = 0

    def get_node_ids(self) -> list[int]:
        return self.ids

    def _train(self, msg, context):
        from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

        rng = np.random.default_rng(msg.metadata.dst_node_id)
        update = ArrayRecord({k: Array(np.asarray(v.numpy() + rng.normal(0, 1e-3, v.numpy().shape))
                                       .astype(v.numpy().dtype)) for k, v in self.model.items()})
        metrics = MetricRecord({"num-examples": 100, "partition-id": context.node_id - 1,
                                "seconds": 0.0, "loss": 1.0})
        return Message(RecordDict({"arrays": update, "metrics": metrics}), reply_to=msg)

    def _deliver(self, msg):
        from fl_sim.app.client_app import query
        from fl_sim.app.client_mods import privacy_mod
        from fl_sim.app.he_client import he_mod

        context = self.contexts[msg.metadata.dst_node_id]
        if msg.metadata.message_type == "query":
            return query(msg, context)
        return he_mod(msg, context, lambda m, c: privacy_mod(m, c, self._train))

    def send_and_receive(self, messages, *, timeout=None):
        from fl_core.flower import recorddict_bytes

        replies = []
        for msg in messages:
            self.sent += len(recorddict_bytes(msg.content))
            reply = self._deliver(copy.deepcopy(msg))
            self.received += len(recorddict_bytes(reply.content))
            replies.append(reply)
        return replies


def measure(task: str, mode: str, clients: int, rounds: int, keys: Path) -> dict:
    """Median seconds and mean bytes per round of one task under one mode."""
    from flwr.app import ConfigRecord

    from fl_sim.options import RunConfig
    from strategies import registry

    settings = {**TASKS[task], "clients": clients, **MODES[mode]}
    if mode == "he":
        settings["he-keys"] = str(keys)
    config = RunConfig.from_mapping(settings)
    model = model_of({**TASKS[task], "clients": clients})
    grid = MeasuringGrid(clients, config.to_run_config(), model)
    strategy = registry.build_for_run(config)
    seconds, up, down = [], [], []
    for server_round in range(1, rounds + 1):
        grid.sent = grid.received = 0
        started = time.perf_counter()
        messages = list(strategy.configure_train(server_round, model, ConfigRecord(), grid))
        replies = grid.send_and_receive(messages) if messages else []
        aggregated, _ = strategy.aggregate_train(server_round, replies)
        seconds.append(time.perf_counter() - started)
        up.append(grid.received)
        down.append(grid.sent)
        assert aggregated is not None, f"{task} {mode}: no aggregate"
    values = sum(v.numpy().size for v in model.values())
    return {"task": task, "mode": mode, "parameters": values,
            "seconds": statistics.median(seconds[1:] or seconds),
            "client_to_server_kb": statistics.mean(up) / clients / 1e3,
            "server_to_client_kb": statistics.mean(down) / clients / 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    args = parser.parse_args()
    from fl_core.flower import TaskIdentity
    from strategies import he

    TaskIdentity.task_id = TaskIdentity.run_id = 1
    TaskIdentity.node_id = 0
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        keys = Path(folder)
        he.provision(keys, 8192)
        for task in args.tasks:
            for mode in MODES:
                rows.append(measure(task, mode, args.clients, args.rounds, keys))
                print(rows[-1], file=sys.stderr, flush=True)
    print("| task | parameters | mode | seconds per round | client -> server per client (kB) "
          "| server -> client per client (kB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['parameters']:,} | {r['mode']} | {r['seconds']:.3f} | "
              f"{r['client_to_server_kb']:,.1f} | {r['server_to_client_kb']:,.1f} |")


if __name__ == "__main__":
    main()
