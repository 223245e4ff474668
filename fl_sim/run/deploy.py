"""``python -m fl_sim deploy``: the same apps on Flower's Deployment Engine, on loopback.

Starts one ``flower-superlink`` and N ``flower-supernode`` processes on 127.0.0.1 (free
ports, insecure mode: local use only), submits the run with ``flwr run`` and the
resolved run config (``run-dir`` included, so the ServerApp writes the usual results
folder), waits for it to end and stops every process it started, also on errors and
Ctrl-C. Each SuperNode gets ``--node-config "partition-id=i num-partitions=N"``, which is
all the ClientApp needs to pick its data.

``flwr`` keeps its connections in ``$FLWR_HOME/config.toml`` (``~/.flwr`` by default);
this launcher points ``FLWR_HOME`` at a temporary folder so the user's own configuration
is never read or changed, and submits a copy of the app's sources, because ``flwr run``
rewrites the pyproject.toml it is given. Logs of every process go to ``<run-dir>/deploy/``.

Flower 1.42 facts this relies on (checked against the installed package): the SuperLink
serves its Fleet, Control and Runtime APIs over HTTP on one ``--host``/``--port``; both
SuperLink and SuperNodes launch ``flower-superexec`` children that exit with their parent
(``--parent-pid``), so it must be on ``PATH``; the SuperLink installs app dependencies
with ``uv sync`` unless ``--disable-runtime-dependency-installation`` (offline here).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fl_sim.options import PROJECT_ROOT, RunConfig, toml_value

CONNECTION = "fl-sim-deploy"
HOST = "127.0.0.1"
BIN = Path(sys.executable).parent
END_STATES = ("finished",)


class DeployError(RuntimeError):
    """The deployment could not start or the run did not finish."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float) -> None:
    """Block until ``port`` accepts connections; fail early if ``process`` dies."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        if process.poll() is not None:
            raise DeployError(f"{process.args[0]} exited with code {process.returncode}")
        if time.monotonic() > deadline:
            raise DeployError(f"nothing listens on {HOST}:{port} after {timeout:.0f}s")
        time.sleep(0.2)


def write_run_config(path: Path, run_config: dict[str, Any]) -> Path:
    """A TOML file of ``key = value`` lines for ``flwr run --run-config <file>``."""
    path.write_text("".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in run_config.items()))
    return path


def write_flwr_config(flwr_home: Path, port: int) -> Path:
    """``$FLWR_HOME/config.toml`` with one insecure connection to our SuperLink."""
    path = flwr_home / "config.toml"
    path.write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n'
        f'[superlink.{CONNECTION}]\naddress = "{HOST}:{port}"\ninsecure = true\n'
    )
    return path


APP_PARTS = ("pyproject.toml", "README.md", "fl_core", "fl_sim", "strategies", "tasks")


def stage_app(target: Path) -> Path:
    """Copy the app's sources to ``target`` and return it.

    ``flwr run`` (1.42) rewrites the app's pyproject.toml, commenting out
    ``[tool.flwr.federations]`` as a "migration"; running it on a copy keeps the user's
    project untouched. The copy is also exactly what the FAB contains.
    """
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    target.mkdir(parents=True, exist_ok=True)
    for part in APP_PARTS:
        source = PROJECT_ROOT / part
        if source.is_dir():
            shutil.copytree(source, target / part, ignore=ignore, dirs_exist_ok=True)
        elif source.exists():
            shutil.copy2(source, target / part)
    return target


@dataclass
class Deployment:
    """The processes of one local deployment; a context manager that stops them all.

    Parameters
    ----------
    clients : int
        Number of SuperNodes.
    log_dir : Path
        Receives ``superlink.log``, ``supernode-<i>.log`` and ``flwr.log``.
    """

    clients: int
    log_dir: Path
    flwr_home: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fl-sim-flwr-")))
    port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """Environment of every process: our FLWR_HOME, this venv's tools first on PATH."""
        return {
            **os.environ,
            "FLWR_HOME": str(self.flwr_home),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }

    def _start(self, name: str, args: Sequence[str]) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [str(BIN / args[0]), *args[1:]], stdout=log, stderr=subprocess.STDOUT,
            env=self.env, cwd=self.flwr_home, start_new_session=True,
        )
        log.close()
        self.processes.append(process)
        return process

    def __enter__(self) -> Deployment:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        write_flwr_config(self.flwr_home, self.port)
        try:
            superlink = self._start("superlink", [
                "flower-superlink", "--insecure", "--host", HOST, "--port", str(self.port),
                "--disable-runtime-dependency-installation",
            ])
            wait_for_port(self.port, superlink, timeout=120)
            for i in range(self.clients):
                self._start(f"supernode-{i}", [
                    "flower-supernode", "--insecure", "--superlink", f"{HOST}:{self.port}",
                    "--host", HOST, "--port", str(free_port()),
                    "--node-config", f"partition-id={i} num-partitions={self.clients}",
                ])
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def flwr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run a ``flwr`` CLI command against this deployment."""
        done = subprocess.run(
            [str(BIN / "flwr"), *args], env=self.env, cwd=PROJECT_ROOT, capture_output=True,
            text=True, timeout=timeout,
        )
        with (self.log_dir / "flwr.log").open("a") as log:
            log.write(f"$ flwr {' '.join(args)}\n{done.stdout}{done.stderr}\n")
        return done

    def submit(self, run_config: dict[str, Any]) -> int:
        """``flwr run`` a staged copy of the app with ``run_config``; return the run id."""
        path = write_run_config(self.flwr_home / "run_config.toml", run_config)
        app = stage_app(self.flwr_home / "app")
        done = self.flwr("run", str(app), CONNECTION, "--run-config", str(path),
                         "--format", "json")
        try:
            reply = json.loads(done.stdout[done.stdout.index("{"):])
        except ValueError:
            reply = {}
        if done.returncode != 0 or not reply.get("success"):
            raise DeployError(f"flwr run failed: {(done.stdout + done.stderr).strip()[-800:]}")
        return int(reply["run-id"])

    def status(self, run_id: int) -> str:
        """The run's status as ``flwr ls`` reports it (e.g. ``running``, ``finished:completed``)."""
        done = self.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json")
        try:
            reply = json.loads(done.stdout[done.stdout.index("{"):])
            return str(reply["runs"][0]["status"])
        except (ValueError, KeyError, IndexError):
            return "unknown"

    def wait(self, run_id: int, timeout: float, poll: float = 2.0,
             on_poll: Callable[[], None] = lambda: None) -> str:
        """Block until the run leaves pending/starting/running; return its final status.

        ``on_poll`` runs at every poll and once at the end (the progress display).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            on_poll()
            status = self.status(run_id)
            if status.startswith("finished"):
                on_poll()
                return status
            if status.startswith("finished"):
                return status
            for process in self.processes:
                if process.poll() is not None:
                    raise DeployError(f"{process.args[0]} exited with code {process.returncode}"
                                      f"; see {self.log_dir}")
            time.sleep(poll)
        raise DeployError(f"run {run_id} did not finish within {timeout:.0f}s")

    def stop(self) -> None:
        """SIGTERM every started process group, SIGKILL what is left after 15 s."""
        for process in self.processes:
            if process.poll() is None:
                _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        shutil.rmtree(self.flwr_home, ignore_errors=True)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def run(cfg: RunConfig, timeout: float = 3600) -> str:
    """Deploy ``--clients`` SuperNodes, run ``cfg`` to the end, stop everything.

    Returns
    -------
    str
        Flower's final run status (``finished:completed`` on success).

    Raises
    ------
    DeployError
        If a process dies, ``flwr run`` is refused, or the run does not finish in time.
    """
    from fl_sim.record.progress import RoundProgress, RoundsFollower, choose_mode

    run_dir = Path(cfg.run.run_dir)
    clients = cfg.federation.clients
    with Deployment(clients, run_dir / "deploy") as deployment:
        run_id = deployment.submit(cfg.to_run_config())
        if not cfg.run.quiet:
            print(f"deployment: SuperLink {HOST}:{deployment.port}, {clients} SuperNodes, "
                  f"run {run_id}; logs in {deployment.log_dir}; waiting for round 0 (the "
                  "initial model)", flush=True)
        follower = RoundsFollower(run_dir / "rounds.csv")
        with RoundProgress(cfg.federation.num_server_rounds,
                           choose_mode(cfg.run.quiet)) as progress:
            def show() -> None:
                for row in follower.new_rows():
                    progress.on_round(row)

            return deployment.wait(run_id, timeout, on_poll=show)
