"""End to end: a parallel --sweep computes what a sequential one does, and Ctrl-C stops it.

The parallel points start a Ray each (the point of --sweep-parallel), so these take longer
than the tests that join the session's Ray head.
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

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow

TIMING = ("run_id", "seconds")
"""rounds.csv columns that differ between any two runs: the run's name and the clock."""


def _sweep(tmp_path: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    # two clients: FedAvg's weighted sum of two replies is the same in either order, so
    # the numbers can be compared bit for bit whichever client answers first
    return run_cli("run", "--task", "regression", "--clients", "2", "--rounds", "3",
                   "--out", str(tmp_path), "--run-name", name,
                   "--sweep", "lr=0.005,0.02", *extra)


def test_parallel_points_compute_exactly_what_sequential_points_do(ray_address, tmp_path):
    sequential = _sweep(tmp_path, "one", "--sweep-parallel", "1", "--ray-address", ray_address)
    assert sequential.returncode == 0, sequential.stderr[-3000:]
    parallel = _sweep(tmp_path, "two", "--sweep-parallel", "2")
    assert parallel.returncode == 0, parallel.stderr[-3000:]
    out = parallel.stdout
    assert "sweep: 2 runs, 2 at a time" in out
    for point in ("lr-0.005", "lr-0.02"):
        assert f"{point} | round 3/3" in out and f"sweep: {point} finished (exit code 0)" in out
        one = pd.read_csv(tmp_path / "one" / point / "rounds.csv").drop(columns=list(TIMING))
        two = pd.read_csv(tmp_path / "two" / point / "rounds.csv").drop(columns=list(TIMING))
        assert len(two) == 4 and two["server_loss"].notna().all()
        pd.testing.assert_frame_equal(one, two, check_exact=True)
        assert (json.loads((tmp_path / "two" / point / "summary.json").read_text())
                == json.loads((tmp_path / "one" / point / "summary.json").read_text()))
    # the comparison comes after every point has ended
    assert out.index("comparison:") > max(out.index("sweep: lr-0.005 finished"),
                                          out.index("sweep: lr-0.02 finished"))
    assert (tmp_path / "two" / "compare" / "compare.csv").exists()


def _rounds_done(run_dir: Path) -> int:
    rounds = run_dir / "rounds.csv"
    return len(rounds.read_text().splitlines()) - 1 if rounds.exists() else 0


def test_ctrl_c_stops_every_point_marks_them_interrupted_and_compares(tmp_path):
    ray_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths
    log = tmp_path / "sweep.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fl_sim", "run", "--task", "regression", "--clients", "2",
         "--rounds", "6", "--local-epochs", "1000", "--out", str(tmp_path), "--run-name",
         "sw", "--sweep", "lr=0.005,0.02", "--sweep-parallel", "2"],
        cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "RAY_TMPDIR": str(ray_dir)})
    runs = [tmp_path / "sw" / "lr-0.005", tmp_path / "sw" / "lr-0.02"]
    deadline = time.monotonic() + 300
    while not all(_rounds_done(run) >= 2 for run in runs):  # round 0 and 1 of both
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the points did not reach round 1"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    output = log.read_text()
    assert proc.returncode == 130, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    for run in runs:
        config = json.loads((run / "config.json").read_text())
        assert config["status"] == "interrupted"
        assert (run / "report" / "index.html").exists()
        assert not (run / ".fl-sim.lock").exists()
        assert f"sweep: {run.name} interrupted (exit code 130)" in output
    assert (tmp_path / "sw" / "compare" / "index.html").exists()
    time.sleep(2)  # Ray's processes share their driver's fate: give them a moment
    left = subprocess.run(["pgrep", "-af", str(ray_dir)], capture_output=True, text=True)
    assert [line for line in left.stdout.splitlines() if "pgrep" not in line] == []
