"""--he end to end: the CLI provisions keys, Ray clients encrypt, the model matches plain."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow
pytest.importorskip("tenseal")

ARGS = ["--task", "regression", "--clients", "3", "--rounds", "3", "--seed", "4"]


def _key_folders() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("fl-sim-he-*"))


def test_an_encrypted_run_matches_plain_fedavg_and_leaves_no_key(ray_address, tmp_path):
    before = _key_folders()
    finals = {}
    for name, extra in (("plain", []), ("he", ["--he"])):
        done = run_cli("run", *ARGS, *extra, "--out", str(tmp_path), "--run-name", name,
                       "--ray-address", ray_address)
        assert done.returncode == 0, done.stderr[-3000:]
        rounds = pd.read_csv(tmp_path / name / "rounds.csv")
        finals[name] = rounds["server_prediction_at_5"].iloc[-1]
    assert finals["he"] == pytest.approx(finals["plain"], rel=1e-4)
    assert abs(finals["he"] - 10) < 1.5
    assert _key_folders() == before  # the run's keys were removed with it
    assert not list((tmp_path / "he").rglob("*.context"))  # and never in the run folder
