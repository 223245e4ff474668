"""End to end: the real Ray simulation, 3 clients, 2 rounds, regression task."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(ray_address, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    done = run_cli("run", "--task", "regression", "--clients", "3", "--rounds", "2",
                   "--lr", "0.02", "--seed", "7", "--out", str(out), "--run-name", "e2e",
                   "--ray-address", ray_address)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "e2e", done.stdout


def test_clients_csv_has_one_row_per_client_round_phase(run_dir):
    clients = pd.read_csv(run_dir[0] / "clients.csv")
    assert len(clients) == 3 * 2 * 2
    counts = clients.groupby(["round", "phase"]).size()
    assert counts.to_dict() == {(r, p): 3 for r in (1, 2) for p in ("evaluate", "train")}
    assert set(clients["partition_id"]) == {0, 1, 2}
    assert (clients["status"] == "ok").all()
    assert not {"epsilon", "accuracy"} & set(clients.columns)  # no DP, no accuracy: no column
    train = clients[clients["phase"] == "train"]
    assert (train["num_examples"] == 64).all()
    assert clients["loss"].notna().all() and (clients["seconds"] > 0).all()


def test_rounds_csv_and_global_prediction(run_dir):
    rounds = pd.read_csv(run_dir[0] / "rounds.csv")
    assert list(rounds["round"]) == [0, 1, 2]
    assert list(rounds["train_replies"].iloc[1:]) == [3, 3]
    assert list(rounds["train_failures"].iloc[1:]) == [0, 0]
    # FedAvg's loss aggregate is the num-examples-weighted mean of the client rows.
    clients = pd.read_csv(run_dir[0] / "clients.csv")
    last = clients[(clients["round"] == 2) & (clients["phase"] == "train")]
    assert rounds["train_loss"].iloc[2] == pytest.approx(last["loss"].mean(), rel=1e-6)
    assert rounds["server_loss"].iloc[2] < rounds["server_loss"].iloc[0]
    assert abs(rounds["server_prediction_at_5"].iloc[-1] - 10.0) < 1.0


def test_config_model_and_summary(run_dir):
    path, stdout = run_dir
    config = json.loads((path / "config.json").read_text())
    assert config["status"] == "finished" and config["finished_at"]
    assert config["settings"]["clients"] == 3
    assert config["settings"]["num-server-rounds"] == 2
    assert config["versions"]["flwr"] == "1.42.0"
    assert (path / "model.pt").stat().st_size > 0
    summary = json.loads((path / "summary.json").read_text())
    assert abs(summary["prediction_at_5"] - 10.0) < 1.0
    assert "client 2" in stdout and "global" in stdout


def test_clients_trained_with_the_cli_settings(run_dir):
    """Round 1 of client 1 equals the same training run in-process with the same flags."""
    from flwr.app import RecordDict

    from fl_sim.options import RunConfig
    from tasks.base import Partition
    from tasks.regression import RegressionTask

    settings = RunConfig.from_mapping(
        {"clients": 3, "num-server-rounds": 2, "lr": 0.02, "seed": 7}
    )
    task = RegressionTask(settings)
    expected = task.train(task.initial_arrays(), Partition(1, 3), RecordDict(), 1)
    clients = pd.read_csv(run_dir[0] / "clients.csv")
    row = clients[(clients["round"] == 1) & (clients["phase"] == "train")
                  & (clients["partition_id"] == 1)].iloc[0]
    assert row["loss"] == pytest.approx(expected.metrics["loss"], rel=1e-5)
    assert row["prediction_at_5"] == pytest.approx(expected.metrics["prediction_at_5"], rel=1e-5)
