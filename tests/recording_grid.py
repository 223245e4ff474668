"""A Flower grid that runs the real ServerApp and ClientApp in-process and keeps every message.

No Ray: each message the server sends is delivered to a ClientApp function with a
persistent per-node context, and both the message and the reply are kept, so a test can
inspect exactly what travelled.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from uuid import uuid4

from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid

from fl_core.flower import TaskIdentity
from fl_sim.app import client_app, server_app
from fl_sim.options import RunConfig

IDENTITY = ("run_id", "node_id", "task_id")


class RecordingGrid(Grid):
    """Delivers each message to an in-process ClientApp and keeps both ends.

    ``through_mods``: deliver through the ClientApp object, so its mods (faults, privacy,
    metrics) run as in a real client; else straight to the train/evaluate functions.
    """

    def __init__(self, run_config: dict, clients: int, through_mods: bool = False) -> None:
        self.run_config = run_config
        self.through_mods = through_mods
        self.sent: list[Message] = []
        self.replies: list[Message] = []
        self.nodes = {100 + i: Context(
            run_id=1, node_id=100 + i,
            node_config={"partition-id": i, "num-partitions": clients},
            state=RecordDict(), run_config=dict(run_config)) for i in range(clients)}

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def _deliver(self, msg: Message, context: Context) -> Message:
        if self.through_mods:
            return client_app.app(msg, context)
        handler = client_app.train if msg.metadata.message_type.startswith("train") \
            else client_app.evaluate
        return handler(msg, context)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        replies = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid4())
            self.sent.append(msg)
            replies.append(self._deliver(msg, self.nodes[msg.metadata.dst_node_id]))
        self.replies.extend(replies)
        return replies

    # Unused by Strategy.start; present to satisfy the abstract interface.
    def create_message(self, *args, **kwargs):  # pragma: no cover
        raise NotImplementedError

    def get_nodes(self):  # pragma: no cover
        raise NotImplementedError

    def push_messages(self, messages):  # pragma: no cover
        raise NotImplementedError

    def pull_messages(self, message_ids):  # pragma: no cover
        raise NotImplementedError

    @property
    def run(self):  # pragma: no cover
        raise NotImplementedError

    def set_run(self, run_id):  # pragma: no cover
        raise NotImplementedError


def run_in_process(settings: dict, run_dir: Path, through_mods: bool = False) -> RecordingGrid:
    """Run the ServerApp to the end over a :class:`RecordingGrid`; return the grid."""
    cfg = RunConfig.from_mapping({**settings, "run-dir": str(run_dir)})
    grid = RecordingGrid(cfg.to_run_config(), cfg.federation.clients, through_mods)
    # Flower stamps messages with the running task's identity (set by its runtime).
    saved = {name: getattr(TaskIdentity, f"_{name}", None) for name in IDENTITY}
    for name in IDENTITY:
        setattr(TaskIdentity, name, 1)
    try:
        server_app.main(grid, Context(run_id=1, node_id=0, node_config={},
                                      state=RecordDict(), run_config=cfg.to_run_config()))
    finally:
        for name, value in saved.items():
            setattr(TaskIdentity, f"_{name}", value)
    return grid
