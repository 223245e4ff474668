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
        "run_id", "round", "phase", "partition_id", "node_id", "num_examples", "loss",
        "accuracy", "g_loss", "epsilon", "seconds", "status",
    ]
    rounds = round_columns(["g_loss"], ["fid"])
    assert rounds[:2] == ["run_id", "round"]
    assert {"train_loss", "train_g_loss", "evaluate_accuracy", "server_fid"} <= set(rounds)
    assert rounds[-1] == "status"


def test_rows_are_on_disk_after_each_append(tmp_path):
    writer = ResultsWriter(tmp_path, ["m"], ["loss"])
    writer.clients.append([{"run_id": "r", "round": 1, "phase": "train", "loss": 0.5,
                            "m": 2.0, "status": "ok"}])
    # Read through a separate handle before close: the row must already be there.
    rows = list(csv.DictReader((tmp_path / "clients.csv").open()))
    assert rows == [{**{c: "" for c in client_columns(["m"])}, "run_id": "r", "round": "1",
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
