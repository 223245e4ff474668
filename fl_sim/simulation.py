"""Launches the ServerApp and ClientApp on Flower's Simulation Engine (Ray backend).

``flwr.simulation.run_simulation`` cannot pass a run config, so this calls the function
it wraps, ``_run_simulation``, with the same arguments ``flwr run`` would produce: the
app directory (for ``[tool.flwr.app.config]``) and the CLI's overrides. Pinned to
flwr 1.42.0; ``tests/test_simulation.py`` checks the config reaches both apps.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flwr.app import Context, RecordDict
from flwr.supercore.run import Run

from fl_sim.config import PROJECT_ROOT, RunConfig


def backend_config(cfg: RunConfig) -> dict[str, Any]:
    """Ray settings from the flags.

    ``client_resources`` decides how many clients train at once: Ray runs
    ``available CPUs / client-cpus`` actors (2 at the default on 2 cores), and each actor
    keeps its task (data, models) in memory between rounds.
    """
    init_args: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR}
    if cfg.ray_address:
        init_args["address"] = cfg.ray_address
    return {
        "client_resources": {"num_cpus": cfg.client_cpus, "num_gpus": cfg.client_gpus},
        "init_args": init_args,
    }


def run(cfg: RunConfig, verbose: bool = False) -> None:
    """Run the configured simulation to the end, in this process."""
    # Keep today's behaviour of Ray (and silence its warning about changing it).
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    from flwr.supercore.telemetry import EventType
    from flwr.simulation.run_simulation import _run_simulation

    from fl_sim.client_app import app as client_app
    from fl_sim.server_app import app as server_app

    overrides = cfg.to_run_config()
    run_record = _new_run(overrides)
    _run_simulation(
        num_supernodes=cfg.clients,
        exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
        client_app=client_app,
        server_app=server_app,
        backend_name="ray",
        backend_config=backend_config(cfg),
        app_dir=str(PROJECT_ROOT),
        # is_app=True is what makes the simulated nodes' contexts read app_dir's
        # pyproject fused with run.override_config; with False they get an empty config.
        is_app=True,
        run=run_record,
        server_app_context=Context(
            run_id=run_record.run_id, node_id=0, node_config={}, state=RecordDict(),
            run_config=overrides,
        ),
        verbose_logging=verbose,
    )


def _new_run(overrides: dict[str, Any]) -> Run:
    """A Run carrying ``overrides``, set up as ``_run_simulation`` does for ``run=None``."""
    from flwr.common.constant import RUN_ID_NUM_BYTES, SUPERLINK_NODE_ID, TASK_ID_NUM_BYTES
    from flwr.server.superlink.linkstate.utils import generate_rand_int_from_bytes
    from flwr.supercore.constant import NOOP_FEDERATION_ID
    from flwr.supercore.task_identity import TaskIdentity

    run = Run.create_empty(run_id=generate_rand_int_from_bytes(RUN_ID_NUM_BYTES))
    run.override_config = dict(overrides)
    run.primary_task_id = generate_rand_int_from_bytes(TASK_ID_NUM_BYTES)
    run.federation_id = NOOP_FEDERATION_ID
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run.run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    return run
