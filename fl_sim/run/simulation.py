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
from collections.abc import Callable
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


def start_ray(cfg: RunConfig, verbose: bool = False) -> None:
    """Start (or join) Ray in this process, as Flower's Ray backend would.

    Flower starts Ray only if it is not running yet; starting it here first lets the run
    take SIGTERM back after ``ray.init`` installs its own handler (which would end the
    driver with ``sys.exit`` inside Flower's threads). The arguments are Flower's: the
    backend's ``init_args`` and this process's ``sys.path`` for the actors.
    """
    import sys

    import ray

    from tasks.dp_sgd import VERBOSE_ENV

    if ray.is_initialized():
        return
    pythonpath = os.pathsep.join(sys.path)
    if os.environ.get("PYTHONPATH"):
        pythonpath = f"{pythonpath}{os.pathsep}{os.environ['PYTHONPATH']}"
    os.environ["PYTHONPATH"] = pythonpath
    env_vars = {"PYTHONPATH": pythonpath}
    if verbose:  # the clients show the library warnings tasks.dp_sgd hides
        env_vars[VERBOSE_ENV] = os.environ[VERBOSE_ENV] = "1"
    ray.init(runtime_env={"env_vars": env_vars},
             **backend_config(cfg)["init_args"])


def run(cfg: RunConfig, verbose: bool = False,
        after_ray_start: Callable[[], None] | None = None) -> None:
    """Run the configured simulation to the end, in this process.

    ``after_ray_start`` runs once Ray is up (the run's signal handlers go back in there).
    """
    # Keep Ray's behaviour on zero GPUs (and silence its warning about changing it).
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # Ray's crash-report handler would take SIGTERM from the driver and abort it (exit
    # -6) instead of letting the run record its end (fl_sim.run.interrupts).
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    from fl_core import flower
    from fl_sim.app.client_app import app as client_app
    from fl_sim.app.server_app import app as server_app
    from fl_sim.run.he_keys import provisioned

    start_ray(cfg, verbose)
    if after_ray_start is not None:
        after_ray_start()
    with provisioned(cfg) as cfg:  # --he: the run's CKKS keys, removed at the end
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


def simulate(cfg: RunConfig, verbose: bool = False,
             also_on_interrupt: Any = None) -> int:
    """Run a validated config whose folder is claimed; report even an interrupted run.

    The run folder is locked while the run is on (:class:`~fl_sim.run.lifecycle.RunLock`).
    Ctrl-C or SIGTERM marks it ``interrupted``, writes the report, runs
    ``also_on_interrupt`` (a sweep compares its runs so far) and ends the process with 130
    or 143 (:mod:`fl_sim.run.interrupts`); ``--resume`` then continues from the last
    checkpoint.

    Returns
    -------
    int
        0, or 1 if the run failed.
    """
    import sys
    from pathlib import Path

    from fl_sim.record.summary import print_summary
    from fl_sim.run.he_keys import remove_all as remove_keys
    from fl_sim.run.interrupts import ending_on_signal
    from fl_sim.run.lifecycle import RunLock, mark

    run_dir = Path(cfg.run.run_dir)
    lock = RunLock(run_dir).acquire()

    def interrupted(code: int) -> None:
        name = "SIGTERM" if code == 143 else "Ctrl-C"
        print(f"\n{name}: stopping; finished rounds are in {run_dir}", file=sys.stderr,
              flush=True)
        remove_keys()  # --he: the secret key goes before anything that could fail
        mark(run_dir, "interrupted")
        report_quietly(run_dir)
        if also_on_interrupt is not None:
            also_on_interrupt()
        lock.release()

    try:
        with ending_on_signal(interrupted) as guard:
            try:
                run(cfg, verbose=verbose, after_ray_start=guard.install)
            except Exception as error:  # the ServerApp has recorded what it could
                mark(run_dir, "failed")
                print(f"fl_sim: run failed: {error}", file=sys.stderr)
                report_quietly(run_dir)
                return 1
        if not cfg.run.quiet:
            print_summary(run_dir)
        report_quietly(run_dir)
        return 0
    finally:
        lock.release()


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
