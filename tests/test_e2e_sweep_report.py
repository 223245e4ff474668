"""End to end: a two-point --sweep on the real Ray simulation, reports and comparison."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_sweep_runs_each_point_reports_and_compares(ray_address, tmp_path):
    done = run_cli("run", "--task", "regression", "--clients", "2", "--rounds", "2",
                   "--out", str(tmp_path), "--run-name", "sweep", "--sweep", "lr=0.005,0.01",
                   "--ray-address", ray_address)
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = tmp_path / "sweep"
    runs = [sweep / "lr-0.005", sweep / "lr-0.01"]
    out = done.stdout
    # not a terminal: one plain progress line per round, then summary and report path
    assert out.count("round 2/2") == 2 and "replies 2 ok/0 failed" in out
    assert "sweep 1/2: lr-0.005" in out and "sweep 2/2: lr-0.01" in out
    for run in runs:
        assert f"report: {run / 'report' / 'index.html'}" in out
        settings = pd.read_json(run / "config.json", typ="series")["settings"]
        assert settings["lr"] in (0.005, 0.01)
        assert (run / "report" / "clients_loss.png").stat().st_size > 0
    assert f"comparison: {sweep / 'compare' / 'index.html'}" in out
    table = pd.read_csv(sweep / "compare" / "compare.csv")
    assert list(table["label"]) == ["lr=0.005", "lr=0.01"]
    for run, final in zip(runs, table["server_loss"]):
        assert final == pytest.approx(pd.read_csv(run / "rounds.csv")["server_loss"].iloc[-1])
    assert (sweep / "compare" / "tradeoff.png").stat().st_size > 0


def test_quiet_run_prints_only_the_report(ray_address, tmp_path):
    done = run_cli("run", "--task", "regression", "--clients", "2", "--rounds", "1",
                   "--out", str(tmp_path), "--run-name", "q", "--quiet",
                   "--ray-address", ray_address)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "round 1/1" not in done.stdout and "global" not in done.stdout
    assert f"report: {tmp_path / 'q' / 'report' / 'index.html'}" in done.stdout
