"""End to end: DP-FedAvg with client-side clipping and a client-level budget (regression)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from dp_accounting import dp_event, rdp

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(ray_address, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    # z = 1: epsilon 4.73, 7.08, 9.01 after 1, 2, 3 rounds; a budget of 8 allows 2.
    done = run_cli("run", "--task", "regression", "--clients", "6", "--clients-per-round", "3",
                   "--rounds", "4", "--fraction-evaluate", "0.5", "--strategy", "dp-fedavg",
                   "--dp-clipping", "client", "--clipping-norm", "0.5",
                   "--server-noise-multiplier", "1.0", "--max-epsilon", "8",
                   "--out", str(out), "--run-name", "dp", "--ray-address", ray_address)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "dp", done.stdout


def direct_epsilon(rounds: int) -> float:
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_event.GaussianDpEvent(1.0), rounds)
    return accountant.get_epsilon(1e-5)


def test_privacy_csv_rows_and_epsilon(run_dir):
    privacy = pd.read_csv(run_dir[0] / "privacy.csv")
    assert list(privacy.columns[:10]) == [
        "run_id", "round", "epsilon", "delta", "noise_multiplier", "clipping_norm",
        "sampled_clients", "population", "accountant", "status"]
    assert list(privacy["round"]) == [1, 2, 3]
    assert list(privacy["status"]) == ["released", "released", "budget-exhausted"]
    assert privacy["epsilon"].iloc[0] == pytest.approx(direct_epsilon(1))
    assert privacy["epsilon"].iloc[1] == pytest.approx(direct_epsilon(2))
    assert privacy["epsilon"].iloc[2] == privacy["epsilon"].iloc[1]  # round 3 never ran
    assert (privacy["clipping_norm"] == 0.5).all() and (privacy["population"] == 6).all()
    assert (privacy["sampled_clients"] == 3).all()
    assert (privacy["accountant"] == "flower-rdp").all()
    # the client-level epsilon is where users look too: rounds.csv and the progress lines
    rounds = pd.read_csv(run_dir[0] / "rounds.csv").set_index("round")
    for r in (1, 2):
        assert rounds.loc[r, "epsilon"] == pytest.approx(privacy["epsilon"].iloc[r - 1])
        assert rounds.loc[r, "epsilon_level"] == "client" and rounds.loc[r, "delta"] == 1e-5
    assert f"epsilon {privacy['epsilon'].iloc[0]:.4g}" in run_dir[1]
    assert (f"privacy: client-level epsilon {privacy['epsilon'].iloc[1]:.4g} at delta 1e-05 "
            "after round 2") in run_dir[1]


def test_budget_stop_recorded_and_last_allowed_model_kept(run_dir):
    path, stdout = run_dir
    rounds = pd.read_csv(path / "rounds.csv")
    assert list(rounds["round"]) == [0, 1, 2, 3]
    assert list(rounds["status"]) == ["ok", "ok", "ok", "budget-exhausted"]
    config = json.loads((path / "config.json").read_text())
    assert config["status"] == "finished"
    assert config["stop_reason"].startswith("privacy budget: round 3 would raise")
    assert config["privacy_budget_stop"]["round"] == 3
    summary = json.loads((path / "summary.json").read_text())
    assert summary["loss"] == pytest.approx(rounds["server_loss"].iloc[2])
    assert (path / "model.pt").stat().st_size > 0
    assert "stopped: round 3" in stdout


def test_exactly_clients_per_round_trained(run_dir):
    clients = pd.read_csv(run_dir[0] / "clients.csv")
    train = clients[clients["phase"] == "train"]
    assert train.groupby("round").size().to_dict() == {1: 3, 2: 3}
    assert (train["status"] == "ok").all()


@pytest.fixture(scope="module")
def secagg_dir(ray_address, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    done = run_cli("run", "--task", "regression", "--clients", "4", "--rounds", "2",
                   "--fraction-evaluate", "0.5", "--strategy", "dp-fedavg",
                   "--dp-clipping", "client", "--clipping-norm", "0.5", "--secagg",
                   "--secagg-shares", "3", "--secagg-threshold", "2",
                   "--out", str(out), "--run-name", "dpsa", "--ray-address", ray_address)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "dpsa"


def test_secagg_with_client_clipping_runs_and_accounts(secagg_dir):
    privacy = pd.read_csv(secagg_dir / "privacy.csv")
    assert list(privacy["status"]) == ["released", "released"]
    assert privacy["epsilon"].iloc[1] == pytest.approx(direct_epsilon(2))
    clients = pd.read_csv(secagg_dir / "clients.csv")
    train = clients[clients["phase"] == "train"]
    assert train.groupby("round").size().to_dict() == {1: 4, 2: 4}  # metrics travel in clear
    rounds = pd.read_csv(secagg_dir / "rounds.csv")
    assert rounds["server_loss"].iloc[2] < rounds["server_loss"].iloc[0]
