"""Launches the ServerApp and ClientApp on Flower's Simulation Engine (Ray backend).

``flwr.simulation.run_simulation`` cannot pass a run config, so this calls the function
it wraps (:func:`fl_core.flower.run_simulation`) with the same arguments ``flwr run``
would produce: the app directory (for ``[tool.flwr.app.config]``) and the CLI's
overrides. ``tests/test_e2e_regression.py`` checks that the clients trained with the
flags.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

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


def warm_modules(cfg: RunConfig) -> list[str]:
    """What each Ray worker imports as it starts (:mod:`fl_sim.app.warm`): the client's code."""
    from fl_sim.app.warm import CLIENT_MODULES
    from tasks import registry as task_registry

    return [*CLIENT_MODULES, task_registry.TASKS.target(cfg.task).partition(":")[0]]


def start_ray(cfg: RunConfig, verbose: bool = False, num_cpus: int | None = None) -> None:
    """Start (or join) Ray in this process, as Flower's Ray backend would.

    Flower starts Ray only if it is not running yet; starting it here first lets the run
    take SIGTERM back after ``ray.init`` installs its own handler (which would end the
    driver with ``sys.exit`` inside Flower's threads). The arguments are Flower's: the
    backend's ``init_args`` and this process's ``sys.path`` for the actors.

    A Ray started here (no ``--ray-address``) also gets:

    - no ``runtime_env``: its workers inherit this process's environment (``PYTHONPATH``
      included), so the idle workers Ray starts with the driver match the job and
      Flower's actors take them, instead of starting workers of their own;
    - Ray's ``preload_python_modules`` = :mod:`fl_sim.app.warm`, so those workers import
      the client's code while this process imports its own;
    - ``num_cpus``, when given: the CPUs it offers (a point of a parallel sweep gets its
      share of the machine); Flower runs ``num_cpus / client-cpus`` actors.
    """
    import sys

    import ray

    from fl_sim.app.warm import MODULES_ENV
    from tasks.options import VERBOSE_ENV

    if ray.is_initialized():
        return
    pythonpath = os.pathsep.join(sys.path)
    if os.environ.get("PYTHONPATH"):
        pythonpath = f"{pythonpath}{os.pathsep}{os.environ['PYTHONPATH']}"
    os.environ["PYTHONPATH"] = pythonpath
    env_vars = {"PYTHONPATH": pythonpath}
    if verbose:  # the clients show the library warnings tasks.dp_sgd hides
        env_vars[VERBOSE_ENV] = os.environ[VERBOSE_ENV] = "1"
    init_args = backend_config(cfg)["init_args"]
    if "address" in init_args:  # a cluster's workers get what they need from the job
        ray.init(runtime_env={"env_vars": env_vars}, **init_args)
        return
    os.environ[MODULES_ENV] = ",".join(warm_modules(cfg))
    if num_cpus is not None:
        init_args["num_cpus"] = num_cpus
    # "local": a new Ray of this run's own, even where `ray start` left a cluster behind
    ray.init(address="local", _system_config={"preload_python_modules": ["fl_sim.app.warm"]},
             **init_args)


class Teardown:
    """Flower's end of a simulation, going on in its thread after the ServerApp ended.

    Flower stops its message threads (each waits up to 1 s for a queue), ends the actors
    and shuts Ray down: about 2 s, which the run spends on its summary and report instead
    of waiting. :meth:`wait` joins it; a teardown left unwaited (:func:`simulate` with
    ``wait_for_ray=False``) is waited for before the process's next run starts Ray.
    """

    unwaited: list[Teardown] = []

    def __init__(self, thread: threading.Thread, failures: list[BaseException]) -> None:
        self.thread = thread
        self.failures = failures

    def wait(self) -> None:
        """Wait for Flower's end; raise what the engine raised, if anything."""
        while self.thread.is_alive():
            self.thread.join(0.1)  # with a timeout: a signal is handled at once
        if self.failures:
            raise self.failures[0]


def _watched(server_app: Any, ended: threading.Event, failures: list[BaseException]) -> Any:
    """``server_app`` in a ServerApp that sets ``ended`` when it returns or raises."""
    from flwr.serverapp import ServerApp

    watched = ServerApp()

    @watched.main()
    def main(grid: Any, context: Any) -> None:
        try:
            server_app(grid, context)
        except BaseException as error:
            failures.append(error)
            raise
        finally:
            ended.set()

    return watched


def run(cfg: RunConfig, verbose: bool = False,
        after_ray_start: Callable[[], None] | None = None,
        num_cpus: int | None = None) -> Teardown:
    """Run the configured simulation in this process until its ServerApp has ended.

    Ray starts first, so that its workers import the client's code (:func:`start_ray`)
    while this process imports the apps. ``after_ray_start`` runs once Ray is up (the
    run's signal handlers go back in there). Flower's simulation runs in a thread; the
    returned :class:`Teardown` is its end, still going on.

    Raises
    ------
    Exception
        What the ServerApp or Flower's engine raised, once the engine has ended.
    """
    while Teardown.unwaited:  # a run before this one in this process: its Ray must be gone
        with contextlib.suppress(Exception):  # that run has ended and reported already
            Teardown.unwaited.pop().wait()
    # Keep Ray's behaviour on zero GPUs (and silence its warning about changing it).
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # Ray's crash-report handler would take SIGTERM from the driver and abort it (exit
    # -6) instead of letting the run record its end (fl_sim.run.interrupts).
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    start_ray(cfg, verbose, num_cpus)
    if after_ray_start is not None:
        after_ray_start()
    from flwr.app import Context, RecordDict

    from fl_core import flower
    from fl_sim.app.client_app import app as client_app
    from fl_sim.app.server_app import app as server_app
    from fl_sim.run.he_keys import provisioned

    ended = threading.Event()
    failures: list[BaseException] = []
    with provisioned(cfg) as cfg:  # --he: the run's CKKS keys, removed at the end
        overrides = cfg.to_run_config()
        run_record = flower.new_run(overrides)
        arguments = dict(
            num_supernodes=cfg.federation.clients,
            client_app=client_app,
            server_app=_watched(server_app, ended, failures),
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

        def engine() -> None:
            try:
                flower.run_simulation(**arguments)
            except BaseException as error:  # noqa: BLE001 - raised again in the caller
                failures.append(error)
            finally:
                ended.set()  # also when the ServerApp never started

        thread = threading.Thread(target=engine, name="fl-sim-engine", daemon=True)
        thread.start()
        while not ended.wait(0.1):  # with a timeout: a signal is handled at once
            pass
    teardown = Teardown(thread, failures)
    if failures:
        teardown.wait()
    return teardown


def quiet_libraries(verbose: bool) -> None:
    """Keep Flower's and Ray's logs out of the terminal unless ``--verbose``.

    Flower's INFO records still reach run.log: only its console handler is raised to
    WARNING, not its logger.
    """
    import logging

    if not verbose:
        flower = logging.getLogger("flwr")
        flower.setLevel(logging.INFO)
        for handler in flower.handlers:
            if not getattr(handler, "baseFilename", None):  # the console, not run.log
                handler.setLevel(logging.WARNING)
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")


def simulate(cfg: RunConfig, verbose: bool = False, also_on_interrupt: Any = None,
             num_cpus: int | None = None, wait_for_ray: bool = True) -> int:
    """Run a validated config whose folder is claimed; report even an interrupted run.

    The run folder is locked while the run is on (:class:`~fl_sim.run.lifecycle.RunLock`).
    Ctrl-C or SIGTERM marks it ``interrupted``, writes the report, runs
    ``also_on_interrupt`` (a sweep compares its runs so far) and ends the process with 130
    or 143 (:mod:`fl_sim.run.interrupts`); ``--resume`` then continues from the last
    checkpoint. The summary and the report are written while Flower ends its actors and
    Ray (:class:`Teardown`). With ``wait_for_ray`` this returns once both are done (the
    next run of the process starts a Ray of its own); without, once the report is written,
    for a process that ends now: its Ray ends with it, as after Ctrl-C.
    ``num_cpus``: see :func:`start_ray`.

    Returns
    -------
    int
        0, or 1 if the run failed.
    """
    import sys
    from pathlib import Path

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

    def failed(error: BaseException) -> int:  # the ServerApp has recorded what it could
        mark(run_dir, "failed")
        print(f"fl_sim: run failed: {error}", file=sys.stderr)
        report_quietly(run_dir)
        return 1

    try:
        with ending_on_signal(interrupted) as guard:
            try:
                teardown = run(cfg, verbose=verbose, after_ray_start=guard.install,
                               num_cpus=num_cpus)
            except Exception as error:
                return failed(error)
            if not cfg.run.quiet:
                from fl_sim.record.summary import print_summary  # pandas: after Ray's start

                print_summary(run_dir)
            from fl_sim.record.phases import finish_timeline

            finish_timeline(run_dir)
            report_quietly(run_dir)
            if not wait_for_ray:
                Teardown.unwaited.append(teardown)
                return 0
            try:
                teardown.wait()
            except Exception as error:
                return failed(error)
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
