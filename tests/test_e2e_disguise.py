"""End to end on Ray: a tiny disguise run classifies real hidden-class images."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tasks.disguise.task import PUBLISHED, read_published
from tasks.image import data as image_data
from tests.conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(ray_address, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    done = run_cli("run", "--task", "disguise", "--dataset", "digits", "--clients", "2",
                   "--rounds", "2", "--local-epochs", "2", "--translator-steps", "100",
                   "--no-dp", "--out", str(out), "--run-name", "e2e",
                   "--ray-address", ray_address)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "e2e"


def test_pipeline_beats_chance_on_real_hidden_images(run_dir):
    report = json.loads((run_dir / "disguise.json").read_text())
    data = image_data.load_images("digits", "", 28, 42)
    real_hidden = int(np.isin(data.test_y, [0, 1]).sum())
    assert report["pipeline"]["test_examples"] == real_hidden > 0
    assert report["pipeline"]["accuracy"] > 0.5
    assert report["direct_baseline"]["test_examples"] == real_hidden
    assert report["cost_of_disguise"] == pytest.approx(
        report["direct_baseline"]["accuracy"] - report["pipeline"]["accuracy"])
    rounds = pd.read_csv(run_dir / "rounds.csv")
    assert list(rounds["round"]) == [0, 1, 2]
    assert rounds["server_accuracy"].iloc[-1] == pytest.approx(report["pipeline"]["accuracy"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["pipeline_accuracy"] == pytest.approx(report["pipeline"]["accuracy"])


def test_clients_trained_on_the_published_set(run_dir):
    _, labels = read_published(run_dir / PUBLISHED)
    clients = pd.read_csv(run_dir / "clients.csv")
    train = clients[(clients["phase"] == "train") & (clients["round"] == 1)]
    evaluate = clients[(clients["phase"] == "evaluate") & (clients["round"] == 1)]
    # Every published example is used once: trained on, or held out by its client.
    assert train["num_examples"].sum() + evaluate["num_examples"].sum() == len(labels)
    assert (clients["status"] == "ok").all()
