"""--tensorboard: event files whose scalars equal rounds.csv."""

from __future__ import annotations

import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fl_sim.record import tensorboard
from tests.synthetic_run import write_run


def read_events(folder):
    events = EventAccumulator(str(folder))
    events.Reload()
    return {name: [(e.step, e.value) for e in events.Scalars(name)]
            for name in events.Tags()["scalars"]}


def test_exported_scalars_equal_the_csv_and_a_second_export_replaces_the_first(tmp_path):
    run_dir = write_run(tmp_path / "run", kind="dcgan", clients=2, rounds=3, client_dp=True)
    tensorboard.export(run_dir)
    folder = tensorboard.export(run_dir)
    scalars = read_events(folder)
    rounds = pd.read_csv(run_dir / "rounds.csv")
    fid = rounds[["round", "server_fid"]].dropna()
    assert scalars["server/fid"] == [(r, pytest.approx(v, rel=1e-6))
                                     for r, v in zip(fid["round"], fid["server_fid"])]
    epsilon = rounds[["round", "epsilon"]].dropna()
    assert [s for s, _ in scalars["privacy/epsilon"]] == list(epsilon["round"])
    assert scalars["replies/train_replies"][-1] == (3, 2.0)
    assert "other/run_id" not in scalars and "privacy/epsilon_level" not in scalars


def test_tags_group_the_columns():
    assert tensorboard.tag("server_fid") == "server/fid"
    assert tensorboard.tag("train_d_loss") == "train/d_loss"
    assert tensorboard.tag("epsilon_max") == "privacy/epsilon_max"
    assert tensorboard.scalars({"round": 1, "status": "ok", "server_fid": float("nan"),
                                "seconds": 2.5}) == {"time/round_seconds": 2.5}
