"""End to end: a two-point frontier on the 8x8 digits, the real Ray simulation."""

from __future__ import annotations

import csv

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_frontier_runs_each_point_and_tabulates_them(ray_address, tmp_path):
    done = run_cli("frontier", "--epsilons", "8,none", "--client-counts", "2",
                   "--priors", "none", "--dataset", "digits", "--rounds", "1",
                   "--gan-width", "8", "--batch-size", "64", "--tstr-seeds", "2",
                   "--out", str(tmp_path),
                   "--run-name", "f", "--ray-address", ray_address)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "f"
    rows = {row["run"]: row for row in csv.DictReader((folder / "frontier.csv").open())}
    assert set(rows) == {"clients-2_prior-none_eps-8", "clients-2_prior-none_eps-none"}
    private, plain = rows["clients-2_prior-none_eps-8"], rows["clients-2_prior-none_eps-none"]
    assert 7.5 < float(private["epsilon"]) <= 8.0 and plain["epsilon"] == ""
    for row in rows.values():
        assert row["rounds"] == "1" and row["status"] == "finished"
        assert 0 <= float(row["tstr_round0"]) <= 1 and 0 <= float(row["tstr_final"]) <= 1
        assert float(row["tstr_gain"]) == pytest.approx(
            float(row["tstr_final"]) - float(row["tstr_round0"]), abs=1e-3)
        assert float(row["fid_final"]) > 0 and float(row["tstr_final_std"]) >= 0
    assert (folder / "frontier.png").stat().st_size > 0
    assert "| 2 | none | none |" in (folder / "frontier.md").read_text()
    assert "frontier: " in done.stdout
