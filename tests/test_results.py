"""ResultsWriter: column schema, per-append flushing, interrupted runs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from fl_sim.record.results import ResultsWriter, client_columns, round_columns
from tests.conftest import REPO


def test_columns_put_task_metrics_between_base_and_trailing():
    assert client_columns(["g_loss"]) == [
        "run_id", "round", "phase", "partition_id", "node_id", "num_examples", "g_loss",
        "seconds", "status",
    ]
    rounds = round_columns(["g_loss"], ["fid"])
    assert rounds[:2] == ["run_id", "round"]
    assert {"train_g_loss", "evaluate_g_loss", "server_fid"} <= set(rounds)
    assert rounds[-1] == "status"


def test_only_columns_the_run_can_fill():
    """No loss/accuracy a task does not report, no epsilon without DP."""
    plain = round_columns(["g_loss", "d_loss"], ["fid"], evaluate_metrics=["g_loss"])
    assert "evaluate_d_loss" not in plain and "train_accuracy" not in plain
    assert not {"epsilon", "epsilon_max", "delta"} & set(plain + client_columns(["g_loss"]))
    sample = client_columns(["g_loss"], sample_dp=True)
    assert {"epsilon", "delta", "noise_multiplier", "sample_rate", "dp_steps"} <= set(sample)
    client_level = round_columns(["loss"], [], client_dp=True)
    assert {"epsilon", "epsilon_level", "delta"} <= set(client_level)
    assert "epsilon_max" not in client_level
    assert "epsilon_max" in round_columns(["loss"], [], sample_dp=True)


def test_a_reopened_file_keeps_the_header_it_was_started_with(tmp_path):
    """A run folder written by an older schema goes on under its own columns."""
    (tmp_path / "rounds.csv").write_text("run_id,round,loss,status\nr,1,0.5,ok\n")
    writer = ResultsWriter(tmp_path, ["g_loss"], [])
    assert writer.rounds.columns == ["run_id", "round", "loss", "status"]
    writer.rounds.append([{"run_id": "r", "round": 2, "loss": 0.25, "status": "ok"}])
    writer.close()
    assert pd.read_csv(tmp_path / "rounds.csv")["loss"].tolist() == [0.5, 0.25]


def test_rows_are_on_disk_after_each_append(tmp_path):
    writer = ResultsWriter(tmp_path, ["loss", "m"], ["loss"])
    writer.clients.append([{"run_id": "r", "round": 1, "phase": "train", "loss": 0.5,
                            "m": 2.0, "status": "ok"}])
    # Read through a separate handle before close: the row must already be there.
    rows = list(csv.DictReader((tmp_path / "clients.csv").open()))
    assert rows == [{**{c: "" for c in client_columns(["loss", "m"])}, "run_id": "r",
                     "round": "1",
                     "phase": "train", "loss": "0.5", "m": "2.0", "status": "ok"}]
    writer.close()


def test_unknown_columns_are_refused(tmp_path):
    writer = ResultsWriter(tmp_path, [], ["loss"])
    with pytest.raises(KeyError, match="not in header"):
        writer.rounds.append([{"round": 1, "surprise": 3}])


def test_nan_is_written_empty_and_reopening_appends_without_second_header(tmp_path):
    writer = ResultsWriter(tmp_path, [], ["loss"])
    writer.rounds.append([{"round": 0, "server_loss": float("nan")}])
    writer.close()
    again = ResultsWriter(tmp_path, [], ["loss"])
    again.rounds.append([{"round": 1, "server_loss": 1.0}])
    again.close()
    frame = pd.read_csv(tmp_path / "rounds.csv")
    assert list(frame["round"]) == [0, 1]
    assert frame["server_loss"].isna().tolist() == [True, False]


def test_config_updates_are_atomic_and_merge(tmp_path):
    writer = ResultsWriter(tmp_path, [], [])
    writer.write_config({"status": "running", "settings": {"a": 1}})
    writer.update_config(status="finished")
    assert json.loads((tmp_path / "config.json").read_text()) == {
        "status": "finished", "settings": {"a": 1}
    }
    assert not list(tmp_path.glob("*.tmp"))


def test_a_killed_writer_keeps_every_finished_round(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal
        from fl_sim.record.results import ResultsWriter
        w = ResultsWriter({str(tmp_path)!r}, [], ["loss"])
        w.write_config({{"status": "running"}})
        for r in range(3):
            w.rounds.append([{{"round": r, "server_loss": 1.0 / (r + 1)}}])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script],
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == -9
    assert list(pd.read_csv(tmp_path / "rounds.csv")["round"]) == [0, 1, 2]
    assert json.loads((tmp_path / "config.json").read_text())["status"] == "running"
