"""End to end on Flower's Deployment Engine: 1 SuperLink + 3 SuperNodes, 2 rounds.

Real processes talking over loopback; checks the CSVs match the simulation's schema and
that every process the launcher started is gone afterwards.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_deploy_three_supernodes_two_rounds(tmp_path):
    pyproject = (REPO / "pyproject.toml").read_bytes()
    done = run_cli("deploy", "--task", "regression", "--clients", "3", "--rounds", "2",
                   "--out", str(tmp_path), "--run-name", "deployed", timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    run_dir = tmp_path / "deployed"
    clients = pd.read_csv(run_dir / "clients.csv")
    assert clients.groupby(["round", "phase"]).size().to_dict() == {
        (r, p): 3 for r in (1, 2) for p in ("evaluate", "train")
    }
    assert set(clients["partition_id"]) == {0, 1, 2}  # from each SuperNode's node config
    assert (clients["status"] == "ok").all() and clients["loss"].notna().all()
    assert (clients.loc[clients["phase"] == "train", "num_examples"] == 64).all()
    rounds = pd.read_csv(run_dir / "rounds.csv")
    assert list(rounds["round"]) == [0, 1, 2]
    assert list(rounds["train_replies"].iloc[1:]) == [3, 3]
    assert rounds["server_loss"].iloc[2] < rounds["server_loss"].iloc[0]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["status"] == "finished" and config["settings"]["clients"] == 3
    assert (run_dir / "report" / "index.html").exists()  # every run ends with its report
    assert f"report: {run_dir / 'report' / 'index.html'}" in done.stdout
    assert {p.name for p in (run_dir / "deploy").iterdir()} >= {
        "superlink.log", "supernode-0.log", "supernode-2.log", "flwr.log"}
    port = re.search(r"SuperLink 127\.0\.0\.1:(\d+)", done.stdout).group(1)
    assert _processes_mentioning(f"127.0.0.1:{port}") == []
    # flwr run "migrates" the pyproject.toml it runs; ours must stay as it was.
    assert (REPO / "pyproject.toml").read_bytes() == pyproject


def test_deploy_refuses_ray_flags(tmp_path):
    done = run_cli("deploy", "--ray-address", "127.0.0.1:1", "--out", str(tmp_path))
    assert done.returncode == 2 and "--ray-address" in done.stderr
    listed = run_cli("deploy", "--help").stdout
    assert "--ray-address" not in listed and "--resume" not in listed  # not offered
    assert "--clients" in listed and "--deploy-timeout" in listed
    config = tmp_path / "ray.toml"
    config.write_text('ray-address = "127.0.0.1:1"\n')
    done = run_cli("deploy", "--config", str(config), "--out", str(tmp_path))
    assert done.returncode == 2 and "is for `run`" in done.stderr
