"""End to end: 2 clients, 2 rounds of DP-DCGAN on tiny 28x28 digits, the real Ray simulation."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(ray_address, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    done = run_cli("run", "--task", "dcgan", "--clients", "2", "--rounds", "2",
                   "--dataset", "digits", "--batch-size", "128", "--target-epsilon", "5",
                   "--out", str(out), "--run-name", "gan", "--ray-address", ray_address)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "gan", done.stdout


def test_sample_grids_weights_and_partitions(run_dir):
    path, stdout = run_dir
    for name in ("round_000.png", "round_001.png", "round_002.png"):
        assert (path / "samples" / name).stat().st_size > 0
    for name in ("generator.pt", "discriminator.pt", "model.pt", "reference_classifier.pt"):
        assert (path / name).stat().st_size > 0
    partitions = json.loads((path / "partitions.json").read_text())
    assert sum(partitions["sizes"]) == 1438 and len(partitions["class_counts"]) == 2
    assert "round 2/2" in stdout and "server_fid" in stdout


def test_metrics_are_finite_and_epsilon_cumulative_under_the_target(run_dir):
    path, _ = run_dir
    clients = pd.read_csv(path / "clients.csv")
    train = clients[clients["phase"] == "train"]
    assert len(train) == 4 and (train["status"] == "ok").all()
    for column in ("g_loss", "d_loss", "d_real_accuracy", "d_fake_accuracy", "epsilon"):
        assert train[column].map(math.isfinite).all(), column
    for _, rows in train.groupby("partition_id"):
        eps = rows.sort_values("round")["epsilon"].tolist()
        assert eps[0] < eps[1] <= 5.0
    assert train[train["round"] == 2]["epsilon"].max() >= 5.0 * 0.98
    rounds = pd.read_csv(path / "rounds.csv")
    assert list(rounds["round"]) == [0, 1, 2]
    for column in ("server_fid", "server_inception_score", "server_reference_accuracy"):
        assert rounds[column].map(math.isfinite).all(), column
    config = json.loads((path / "config.json").read_text())
    assert config["status"] == "finished"
    sigma = config["resolved"]["noise-multiplier"]
    assert sigma > 0 and sigma != config["settings"]["noise-multiplier"]
    assert max(config["resolved"]["planned-epsilon"]) == pytest.approx(
        train[train["round"] == 2]["epsilon"].max(), abs=1e-6)
