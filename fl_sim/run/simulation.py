"""Launches the ServerApp and ClientApp on Flower's Simulation Engine (Ray backend).

``flwr.simulation.run_simulation`` cannot pass a run config, so this calls the function
it wraps (:func:`fl_core.flower.run_simulation`) with the same arguments ``flwr run``
would produce: the app directory (for ``[tool.flwr.app.config]``) and the CLI's
overrides. ``tests/test_e2e_regression.py`` checks that the clients trained with the
flags.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flwr.app import Context, RecordDict

from fl_sim.options import PROJECT_ROOT, RunConfig


def backend_config(cfg: RunConfig) -> dict[str, Any]:
    """Ray settings from the flags.

    ``client_resources`` decides how many clients train at once: Ray runs
    ``available CPUs / client-cpus`` actors (2 at the default on 2 cores), and each actor
    keeps its task (data, models) in memory between rounds.
    """
    init_args: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR}
    resources = cfg.resources
    if resources.ray_address:
        init_args["address"] = resources.ray_address
    return {
        "client_resources": {"num_cpus": resources.client_cpus,
                             "num_gpus": resources.client_gpus},
        "init_args": init_args,
    }


def run(cfg: RunConfig, verbose: bool = False) -> None:
    """Run the configured simulation to the end, in this process."""
    # Keep today's behaviour of Ray (and silence its warning about changing it).
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    from fl_core import flower
    from fl_sim.app.client_app import app as client_app
    from fl_sim.app.server_app import app as server_app

    overrides = cfg.to_run_config()
    run_record = flower.new_run(overrides)
    flower.run_simulation(
        num_supernodes=cfg.federation.clients,
        client_app=client_app,
        server_app=server_app,
        backend_name="ray",
        backend_config=backend_config(cfg),
        app_dir=str(PROJECT_ROOT),
        # Without is_app, Flower gives every ClientApp an empty context.run_config (it
        # fuses app_dir's pyproject with the overrides only for apps loaded from a dir),
        # and clients would silently train with pyproject defaults instead of the flags.
        is_app=True,
        run=run_record,
        server_app_context=Context(
            run_id=run_record.run_id, node_id=0, node_config={}, state=RecordDict(),
            run_config=overrides,
        ),
        verbose_logging=verbose,
    )


def quiet_libraries(verbose: bool) -> None:
    """Keep Flower's and Ray's logs out of the terminal unless ``--verbose``."""
    import logging

    if not verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")


def simulate(cfg: RunConfig, verbose: bool = False) -> int:
    """Run a validated config whose folder is claimed; report even an interrupted run.

    Returns the exit code: 0, 1 (the run failed) or 130 (interrupted).
    """
    import sys
    from pathlib import Path

    from fl_sim.record.summary import print_summary
    from fl_sim.run.lifecycle import mark

    run_dir = Path(cfg.run.run_dir)
    try:
        run(cfg, verbose=verbose)
    except KeyboardInterrupt:
        mark(run_dir, "interrupted")
        print(f"interrupted; finished rounds are in {run_dir}", file=sys.stderr)
        report_quietly(run_dir)
        return 130
    except Exception as error:  # the ServerApp has recorded what it could
        mark(run_dir, "failed")
        print(f"fl_sim: run failed: {error}", file=sys.stderr)
        report_quietly(run_dir)
        return 1
    if not cfg.run.quiet:
        print_summary(run_dir)
    report_quietly(run_dir)
    return 0


def report_quietly(run_dir: Any) -> Any:
    """Write the run's report; a plotting problem never fails a finished run."""
    import sys

    from fl_sim.report.build import make_report

    try:
        index = make_report(run_dir)
    except Exception as error:  # noqa: BLE001 - the results are safe; say why, go on
        print(f"fl_sim: report failed ({error}); retry with: python -m fl_sim report {run_dir}",
              file=sys.stderr)
        return None
    print(f"report: {index}", flush=True)
    return index
