"""The one door to Flower's private and internal API, pinned to the version it was read from.

Why: fl-sim relies on a few parts of Flower that are not its public Message API (the
simulation entry point that takes a run config, the run identity, the RDP accountant of
the DP wrappers, the SecAgg+ workflow's stages). They may change in any release, so
every such import lives here, and importing this module on another Flower version fails
at once with what to install, instead of somewhere inside a round.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any

FLOWER_VERSION = "1.42.0"
FLOWER_POLL = 0.1
"""Seconds Flower 1.42's simulation waits between two polls for messages."""
PROMPT_POLL = 0.01
"""Seconds :func:`prompt_polling` waits instead, where a poll is cheap."""


def check_version(installed: str | None = None) -> None:
    """Fail unless the installed Flower is :data:`FLOWER_VERSION`.

    Raises
    ------
    RuntimeError
        Naming both versions and the pin to install.
    """
    installed = installed or metadata.version("flwr")
    if installed != FLOWER_VERSION:
        raise RuntimeError(
            f"fl-sim uses Flower internals read from flwr {FLOWER_VERSION}, but flwr "
            f"{installed} is installed; install flwr=={FLOWER_VERSION} (constraints.txt)")


check_version()

# The imports below must follow the version check (hence E402).
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto  # noqa: E402
from flwr.compat.common import recorddict_compat  # noqa: E402
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict  # noqa: E402
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD  # noqa: E402
from flwr.server.workflow.constant import Key as WorkflowKey  # noqa: E402
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import (  # noqa: E402
    SecAggPlusWorkflow,
    WorkflowState,
)
from flwr.serverapp.strategy.strategy_utils import (  # noqa: E402
    aggregate_arrayrecords,
    aggregate_metricrecords,
)
from flwr.supercore import log  # noqa: E402
from flwr.supercore.privacy_accounting import (  # noqa: E402
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    SamplingMethod,
)
from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant  # noqa: E402
from flwr.supercore.run import Run  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402
from flwr.superlink.grid.inmemory_grid import InMemoryGrid  # noqa: E402

__all__ = [
    "FLOWER_VERSION", "GaussianPrivacyEvent", "InMemoryGrid", "MAIN_CONFIGS_RECORD",
    "MAIN_PARAMS_RECORD",
    "NeighboringRelation", "PrivacyConfig", "RdpAccountant", "Run", "SamplingMethod",
    "SecAggPlusWorkflow", "TaskIdentity", "WorkflowKey", "WorkflowState",
    "aggregate_arrayrecords", "aggregate_metricrecords", "app_config_read_once",
    "check_version", "log", "new_run",
    "prompt_polling", "recorddict_compat", "recorddict_bytes", "recorddict_of_bytes",
    "run_simulation",
]


def recorddict_bytes(records: Any) -> bytes:
    """A RecordDict as Flower's own protobuf bytes: data only, nothing to execute."""
    return recorddict_to_proto(records).SerializeToString()


def recorddict_of_bytes(data: bytes) -> Any:
    """Parse what :func:`recorddict_bytes` wrote (raises on anything else)."""
    return recorddict_from_proto(ProtoRecordDict.FromString(data))


def new_run(overrides: dict[str, Any]) -> Run:
    """A Run carrying ``overrides``, set up as ``_run_simulation`` does for ``run=None``.

    The public ``flwr.simulation.run_simulation`` cannot pass a run config; building the
    Run ourselves is how ``flwr run``'s overrides reach both apps in-process.
    """
    from flwr.common.constant import RUN_ID_NUM_BYTES, SUPERLINK_NODE_ID, TASK_ID_NUM_BYTES
    from flwr.server.superlink.linkstate.utils import generate_rand_int_from_bytes
    from flwr.supercore.constant import NOOP_FEDERATION_ID

    run = Run.create_empty(run_id=generate_rand_int_from_bytes(RUN_ID_NUM_BYTES))
    run.override_config = dict(overrides)
    run.primary_task_id = generate_rand_int_from_bytes(TASK_ID_NUM_BYTES)
    run.federation_id = NOOP_FEDERATION_ID
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run.run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    return run


def run_simulation(**kwargs: Any) -> None:
    """Flower's ``_run_simulation`` (imports Ray, hence only when a simulation starts).

    Runs inside :func:`app_config_read_once`, so the simulated population's start-up does
    not parse ``pyproject.toml`` once per client, and inside :func:`prompt_polling`, so a
    message waits milliseconds, not a tenth of a second, between the ServerApp and a client.
    """
    from flwr.simulation.run_simulation import _run_simulation
    from flwr.supercore.telemetry import EventType

    with app_config_read_once(), prompt_polling():
        _run_simulation(exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE, **kwargs)


@contextmanager
def prompt_polling(interval: float = PROMPT_POLL) -> Iterator[None]:
    """While inside, Flower's simulation passes messages on every ``interval`` seconds.

    Why: Flower 1.42's simulation moves messages by polling, every :data:`FLOWER_POLL`
    seconds on both sides: the engine's ``vce_api.add_messages_to_queue`` asks the
    LinkState for each node's instructions, then waits; ``InMemoryGrid.send_and_receive``
    pulls the replies, then waits (its ``pull_interval``). A round (train, then evaluate)
    so waits up to four polls, 0.2-0.4 s, where a regression round computes for about
    10 ms. Here the grid pulls every ``interval`` (a pull looks up only the message ids it
    waits for). The engine's pass asks every registered node, so it costs O(population):
    its wait is ten times the pass's own duration, at least ``interval`` and at most
    Flower's 0.1 s, so polling holds at most about a tenth of a core at any population
    (a 100,000-node pass, which takes longer than 10 ms, polls as often as in Flower).
    Which client trains what, and every message, are unchanged.
    """
    import flwr.simulation.run_simulation  # noqa: F401 - the module, not the function
    from flwr.server.superlink.fleet.vce import vce_api

    simulation = sys.modules["flwr.simulation.run_simulation"]

    def add_messages_to_queue(state: Any, queue: Any, nodes_mapping: Any, f_stop: Any) -> None:
        # Flower's loop (vce_api.add_messages_to_queue) with the wait above.
        while not f_stop.is_set():
            started = time.perf_counter()
            for node_id in nodes_mapping:
                for message in state.get_message_ins(node_id=node_id, limit=1):
                    queue.put(message)
            spent = time.perf_counter() - started
            f_stop.wait(min(FLOWER_POLL, max(interval, 10 * spent)))

    class PromptGrid(InMemoryGrid):
        """Flower's in-memory grid, pulling replies every ``interval`` seconds."""

        def __init__(self, state_factory: Any, pull_interval: float = interval) -> None:
            super().__init__(state_factory=state_factory, pull_interval=pull_interval)

    saved = vce_api.add_messages_to_queue, simulation.InMemoryGrid
    vce_api.add_messages_to_queue, simulation.InMemoryGrid = add_messages_to_queue, PromptGrid
    try:
        yield
    finally:
        vce_api.add_messages_to_queue, simulation.InMemoryGrid = saved


@contextmanager
def app_config_read_once() -> Iterator[None]:
    """While inside, Flower fuses the app's ``[tool.flwr.app.config]`` once per run.

    Why: Flower 1.42's simulation registers every node's context through
    ``DeprecatedRunInfoStore.register_context``, which calls ``get_fused_config_from_dir``
    and so reads and parses ``pyproject.toml`` once per node: about 0.35 ms each, 35 s of
    start-up for 100,000 clients, for the same answer every time. Here the answer is
    computed once per (folder, overrides) and the one dict is shared; Flower never
    mutates it (``register_context`` copies it into each ``Context``, and
    ``update_context`` only compares against it).
    """
    from flwr.compat.client import run_info_store

    read = run_info_store.get_fused_config_from_dir
    fused: dict[tuple[str, str], Any] = {}

    def once(project_dir: Any, override_config: Any) -> Any:
        key = (str(project_dir), repr(sorted(dict(override_config).items())))
        if key not in fused:
            fused[key] = read(project_dir, override_config)
        return fused[key]

    run_info_store.get_fused_config_from_dir = once
    try:
        yield
    finally:
        run_info_store.get_fused_config_from_dir = read
