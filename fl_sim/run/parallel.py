"""``--sweep-parallel``: grid points of a sweep at once, each in its own process and Ray.

Why processes, not a shared cluster: Flower's simulation runs where Ray was started, one
Ray per process (:mod:`fl_sim.run.simulation`), and it sizes a run's actor pool from every
CPU its cluster offers. Points joining one cluster (``--ray-address``) would each build a
pool for the whole cluster, and their actors would queue behind each other's. So each
point runs ``python -m fl_sim.run.parallel`` with its own settings, the folder this
process claimed for it (as a sequential sweep does) and its own Ray, which offers that
point's share of the CPUs; its clients still reserve ``--client-cpus`` each. A point
computes what it computes alone, with the same settings and code path
(:func:`~fl_sim.run.simulation.simulate`); only fewer of its clients train at once, so their
replies may arrive in another order (sums of three or more replies can then differ in
float32's last bits, as between any two runs).

Each point's output comes back line by line, prefixed with its name, so concurrent
progress stays readable. A point that fails leaves the others running; the sweep's exit
code is the worst of its points'. The first Ctrl-C (or SIGTERM) goes on to every running
point, which marks itself ``interrupted`` and writes its report; no new point starts; a
second signal ends every point and this process at once.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from fl_core.options import UsageError
from fl_sim.options import PROJECT_ROOT, RunConfig
from fl_sim.run.interrupts import EXIT_CODES

Command = Callable[[RunConfig, "int | None", bool], Sequence[str]]


def cpu_count() -> int | None:
    """CPUs this process may use (its affinity), or None if unknown."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count()


def points_at_once(cfg: RunConfig, points: int) -> tuple[int, int | None]:
    """How many points run at once, and how many CPUs each point's Ray offers.

    A point needs at least one client's ``--client-cpus`` (rounded up: Ray counts whole
    CPUs). ``--sweep-parallel 0`` runs as many points as the machine's CPUs hold at that
    much each, and 1 when the CPUs are unknown or the points join a cluster
    (``--ray-address``: its CPUs are not this machine's). The CPUs are then split evenly:
    two points on two cores get one CPU each, so each runs one client at a time.

    Returns
    -------
    tuple
        (points at once, at least 1 and at most ``points``; CPUs per point's Ray, or None
        for Ray's own count: one point at a time, or a cluster).
    """
    resources = cfg.resources
    cpus = cpu_count()
    per_point = max(1, math.ceil(resources.client_cpus))
    wanted = resources.sweep_parallel
    if wanted == 0:
        wanted = 1 if resources.ray_address or not cpus else max(1, cpus // per_point)
    at_once = max(1, min(wanted, points))
    if at_once == 1 or resources.ray_address or not cpus:
        return at_once, None
    return at_once, max(per_point, cpus // at_once)


def point_command(cfg: RunConfig, num_cpus: int | None, verbose: bool) -> list[str]:
    """The command that runs one claimed point (:func:`point_main`)."""
    return [sys.executable, "-m", "fl_sim.run.parallel", json.dumps(cfg.to_run_config()),
            str(num_cpus or 0), *(["--verbose"] if verbose else [])]


class Output:
    """Copies a point's lines to this process's stdout or stderr, prefixed with its name."""

    lock = threading.Lock()

    def __init__(self, name: str) -> None:
        self.prefix = f"{name} | "
        self.threads: list[threading.Thread] = []

    def follow(self, stream: IO[str], target: IO[str]) -> None:
        """Copy ``stream`` to ``target`` in a thread, one whole line at a time."""
        def copy() -> None:
            for line in stream:
                with self.lock:
                    target.write(self.prefix + line if line.endswith("\n") else
                                 f"{self.prefix}{line}\n")
                    target.flush()

        thread = threading.Thread(target=copy, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        """Wait until every line of the ended point is out."""
        for thread in self.threads:
            thread.join()

    @classmethod
    def say(cls, line: str, target: IO[str] | None = None) -> None:
        """A line of the sweep's own, never in the middle of a point's."""
        with cls.lock:
            print(line, file=target or sys.stdout, flush=True)


class Stopping:
    """SIGINT/SIGTERM while points run: forward the first to them, end on the second."""

    def __init__(self) -> None:
        self.code = 0
        self.children: list[subprocess.Popen] = []

    def handle(self, signum: int, _frame: object) -> None:
        """Forward the signal to every running point; a second one ends everything now."""
        code = EXIT_CODES.get(signal.Signals(signum), 128 + signum)
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signum)  # the point's driver; its Ray shares its fate
        if self.code:  # the second signal: each point has just ended at once, as this does
            sys.stdout.flush()
            os._exit(code)
        self.code = code

    def __enter__(self) -> Stopping:
        self.previous = {sig: signal.signal(sig, self.handle) for sig in EXIT_CODES}
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, old in self.previous.items():
            signal.signal(sig, signal.SIG_DFL if old is None else old)


def run_points(configs: list[RunConfig], at_once: int, num_cpus: int | None,
               verbose: bool = False, command: Command = point_command,
               claim: Callable[[RunConfig], RunConfig] | None = None) -> tuple[int, list[Path]]:
    """Run every point, ``at_once`` at a time, each in its own process.

    Parameters
    ----------
    configs : list of RunConfig
        The validated grid points, folders not yet claimed.
    at_once, num_cpus : int
        From :func:`points_at_once`.
    command : callable
        ``(claimed config, num_cpus, verbose) -> argv`` of a point's process.
    claim : callable, optional
        Claims a point's folder (:func:`~fl_sim.run.lifecycle.claim_run_dir`), just before
        it starts, so a point that never starts leaves no folder.

    Returns
    -------
    tuple
        The worst exit code (130 or 143 after a signal; 2 if a folder could not be
        claimed, after which no point starts), and the folders of the points that
        started, in grid order.
    """
    if claim is None:
        from fl_sim.run.lifecycle import claim_run_dir as claim
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                       os.environ.get("PYTHONPATH")]))}
    waiting = list(enumerate(configs, 1))
    running: dict[subprocess.Popen, tuple[str, Output]] = {}
    started: list[Path] = []
    worst = 0
    with Stopping() as stopping:
        while waiting or running:
            while waiting and len(running) < at_once and not stopping.code:
                i, cfg = waiting.pop(0)
                try:
                    cfg = claim(cfg)
                except UsageError as error:  # the folder cannot be made: start no more
                    Output.say(f"fl_sim: error: {error}", sys.stderr)
                    worst = max(worst, 2)
                    waiting.clear()
                    break
                name = cfg.run.run_name or Path(cfg.run.run_dir).name
                Output.say(f"sweep {i}/{len(configs)}: {name} -> {cfg.run.run_dir}")
                started.append(Path(cfg.run.run_dir))
                child = subprocess.Popen(
                    command(cfg, num_cpus, verbose), env=env, text=True, bufsize=1,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                    start_new_session=True)  # a terminal's Ctrl-C reaches it only from here
                output = Output(name)
                output.follow(child.stdout, sys.stdout)
                output.follow(child.stderr, sys.stderr)
                running[child] = (name, output)
                stopping.children.append(child)
            if stopping.code:
                waiting.clear()
            for child in [c for c in running if c.poll() is not None]:
                name, output = running.pop(child)
                output.join()
                code = child.returncode if child.returncode >= 0 else 128 - child.returncode
                worst = max(worst, code)
                ending = {0: "finished", 130: "interrupted", 143: "interrupted"}.get(code,
                                                                                    "failed")
                Output.say(f"sweep: {name} {ending} (exit code {code})",
                           None if code == 0 else sys.stderr)
            time.sleep(0.05)
        return max(worst, stopping.code), started


def point_main(argv: Sequence[str] | None = None) -> int:
    """One point of a parallel sweep: ``SETTINGS_JSON NUM_CPUS [--verbose]``.

    The settings are the point's whole run config, its claimed ``run-dir`` included.
    """
    from fl_sim.record import logs
    from fl_sim.run.simulation import quiet_libraries, simulate

    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in args
    logs.configure(None, verbose)  # at the sweep's --log-level (inherited), as the CLI does
    cfg = RunConfig.from_mapping(json.loads(args[0]))
    num_cpus = int(args[1]) or None
    if num_cpus:
        keep_to_share(num_cpus)
    quiet_libraries(verbose)
    return simulate(cfg, verbose, num_cpus=num_cpus, wait_for_ray=False)


def keep_to_share(num_cpus: int) -> None:
    """Give this point's own torch (the server's prior fit and evaluation) its CPU share.

    Why: torch starts as many threads as the machine has cores. Two points on two cores
    then ran four threads; the DCGAN's public prior, fitted in the point's process,
    took over ten times as long as alone. Ray's actors get their share from Ray
    (:func:`fl_sim.app.warm.match_ray_threads`); this is the driver's.
    """
    import torch

    torch.set_num_threads(num_cpus)


if __name__ == "__main__":
    # As fl_sim.cli.entry: every result is written when simulate returns, and Flower may
    # leave a non-daemon thread behind, so the process ends without joining it.
    code = point_main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
