"""Ctrl-C and SIGTERM end a simulation within seconds, keep its rounds, and it resumes.

Each test starts its own Ray (in a temporary folder), so it can check that no Ray process
outlives the run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _ray_processes(ray_dir) -> list[str]:
    done = subprocess.run(["pgrep", "-af", str(ray_dir)], capture_output=True, text=True)
    return [line for line in done.stdout.splitlines() if "pgrep" not in line]


def _start(tmp_path, name: str, *extra: str) -> tuple[subprocess.Popen, dict]:
    # Ray's socket paths must stay under 108 bytes: a short folder of its own.
    ray_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_TMPDIR": str(ray_dir)}
    log = tmp_path / f"{name}.log"
    proc = subprocess.Popen(  # output to a file: an unread pipe would block the run
        [sys.executable, "-m", "fl_sim", "run", "--task", "regression", "--clients", "3",
         "--rounds", "6", "--local-epochs", "1000", "--checkpoint-every", "1", *extra,
         "--out", str(tmp_path), "--run-name", name],
        cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)
    return proc, {"ray_dir": ray_dir, "run_dir": tmp_path / name, "log": log}


def _wait_for_round(run_dir, server_round: int, proc, limit: float = 240) -> None:
    deadline = time.monotonic() + limit
    while True:
        rounds = run_dir / "rounds.csv"
        if rounds.exists() and len(rounds.read_text().splitlines()) > server_round + 1:
            return
        assert proc.poll() is None, "the run ended early"
        assert time.monotonic() < deadline, "the run did not reach the round"
        time.sleep(0.1)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_ends_the_run_keeps_its_rounds_and_resume_continues(tmp_path, sig, code):
    proc, where = _start(tmp_path, sig.name.lower())
    run_dir = where["run_dir"]
    _wait_for_round(run_dir, 2, proc)
    sent = time.monotonic()
    proc.send_signal(sig)
    proc.wait(timeout=60)
    took = time.monotonic() - sent
    output = where["log"].read_text()
    assert proc.returncode == code, output[-2000:]
    assert took < 30, f"{took:.1f} s to stop"
    assert "Traceback" not in output and "Segmentation" not in output, output[-2000:]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["status"] == "interrupted"
    assert (run_dir / "report" / "index.html").exists()
    assert not (run_dir / ".fl-sim.lock").exists()
    time.sleep(2)  # Ray's processes share the driver's fate: give them a moment
    assert _ray_processes(where["ray_dir"]) == []
    kept = pd.read_csv(run_dir / "rounds.csv")["round"].tolist()
    assert kept[:3] == [0, 1, 2]
    resumed = subprocess.run([sys.executable, "-m", "fl_sim", "run", "--resume", str(run_dir)],
                             cwd=REPO, capture_output=True, text=True, timeout=600,
                             env={**os.environ, "RAY_TMPDIR": str(where["ray_dir"])})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert pd.read_csv(run_dir / "rounds.csv")["round"].tolist() == list(range(7))
    assert json.loads((run_dir / "config.json").read_text())["status"] == "finished"


def test_a_second_ctrl_c_ends_the_process_at_once(tmp_path):
    proc, where = _start(tmp_path, "twice")
    _wait_for_round(where["run_dir"], 1, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    proc.wait(timeout=60)
    assert proc.returncode == 130
    assert time.monotonic() - sent < 15


def test_an_interrupted_encrypted_run_leaves_no_secret_key(tmp_path):
    pytest.importorskip("tenseal")
    before = set(Path(tempfile.gettempdir()).glob("fl-sim-he-*"))
    proc, where = _start(tmp_path, "he", "--he")
    _wait_for_round(where["run_dir"], 1, proc)
    assert set(Path(tempfile.gettempdir()).glob("fl-sim-he-*")) - before  # keys exist now
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert proc.returncode == 130, where["log"].read_text()[-2000:]
    assert set(Path(tempfile.gettempdir()).glob("fl-sim-he-*")) == before
