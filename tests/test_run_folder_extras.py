"""What the ServerApp adds to a run folder for its reader: phases, run.log, TensorBoard."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.recording_grid import run_in_process


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("extras") / "run"
    run_dir.mkdir()
    run_in_process({"task": "regression", "clients": 2, "num-server-rounds": 2,
                    "tensorboard": True, "quiet": True}, run_dir)
    return run_dir


def test_config_splits_the_time_into_phases(regression_run):
    config = json.loads((regression_run / "config.json").read_text())
    assert set(config["phases"]) == {"start-up", "initial model", "round 0 evaluation",
                                     "rounds"}
    assert all(seconds >= 0 for seconds in config["phases"].values())
    assert config["total_seconds"] >= config["phases"]["rounds"]


def test_run_log_keeps_flowers_info_records(regression_run):
    log = (regression_run / "run.log").read_text()
    assert "flwr" in log and "rounds: started" in log


def test_tensorboard_has_every_round_and_no_empty_column(regression_run):
    events = EventAccumulator(str(regression_run / "tensorboard"))
    events.Reload()
    loss = [(e.step, e.value) for e in events.Scalars("server/loss")]
    rounds = pd.read_csv(regression_run / "rounds.csv")
    assert [step for step, _ in loss] == [0, 1, 2]
    assert [value for _, value in loss] == pytest.approx(rounds["server_loss"].tolist())
    # a regression run without DP: no epsilon column, no accuracy, counts as integers
    assert not {"epsilon", "epsilon_max", "delta", "train_accuracy"} & set(rounds.columns)
    assert rounds.drop(columns=["seconds"]).notna().any().all()
    assert rounds["train_replies"].dtype.kind == "i"
    clients = pd.read_csv(regression_run / "clients.csv")
    assert not {"epsilon", "accuracy", "noise_multiplier"} & set(clients.columns)
