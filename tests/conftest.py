"""Shared fixtures: one Ray head per test session, results and the cache in temporary folders.

Starting Ray costs seconds; end-to-end tests join one head started here on loopback
(``--ray-address``), which also exercises joining an existing cluster.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Address of a Ray head on 127.0.0.1 shared by the session.

    Started with ``--block`` in its own process group, so teardown stops exactly this
    head (``ray stop`` would stop every Ray on the machine).
    """
    port = _free_port()
    temp_dir = tmp_path_factory.mktemp("ray")
    env = {**os.environ, "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}
    head = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", f"--port={port}",
         "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--num-cpus=2",
         "--disable-usage-stats", f"--temp-dir={temp_dir}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the Ray head did not start")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The cache folder of every run a test starts (in process or as a subprocess).

    ``$FL_SIM_CACHE_DIR`` points at a folder of the session, so no test reads or writes the
    user's ``~/.cache/fl-sim``; runs of one session share it, as a user's runs would.
    """
    folder = tmp_path_factory.mktemp("fl-sim-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FL_SIM_CACHE_DIR", str(folder))
        yield folder


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m fl_sim ARGS`` from the repository root, capturing output."""
    return subprocess.run(
        [sys.executable, "-m", "fl_sim", *args], cwd=REPO, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.fixture
def quick(monkeypatch):
    """The public prior's recipe cut to one epoch of each phase on 630 digits.

    A fit then takes seconds: for tests of the prior's plumbing and its cache, not of
    what a full fit learns.
    """
    from tasks.dcgan import public_prior

    monkeypatch.setattr(public_prior, "COPIES", 3)
    monkeypatch.setattr(public_prior, "FEATURE_EPOCHS", 1)
    monkeypatch.setattr(public_prior, "GAN_EPOCHS", 1)
    monkeypatch.setattr(public_prior, "GUIDE_EPOCHS", 1)
