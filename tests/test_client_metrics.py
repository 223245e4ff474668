"""--client-metrics: every message that leaves a client, recorded, in each mode.

The real ServerApp and ClientApp (with its mods) run in-process over a recording grid.
"""

from __future__ import annotations

import pandas as pd
import pytest
from flwr.app import MetricRecord

from fl_sim.app.client_mods import CLEAR
from fl_sim.options import OptionError, RunConfig
from tests.recording_grid import run_in_process

CLIENTS = 2
PRIVATE = {"loss", "accuracy"}


def _sent_metrics(grid) -> list[dict]:
    """Every metric record of every reply the clients sent."""
    return [dict(record) for reply in grid.replies
            for record in reply.content.values() if isinstance(record, MetricRecord)]


@pytest.fixture(scope="module", params=["all", "none"])
def run(request, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp(request.param) / "run"
    run_dir.mkdir()
    grid = run_in_process({"task": "classifier", "dataset": "digits", "clients": CLIENTS,
                           "num-server-rounds": 2, "dp": True, "noise-multiplier": 1.0,
                           "client-metrics": request.param}, run_dir, through_mods=True)
    return request.param, grid, run_dir


def test_what_leaves_a_client_in_each_mode(run):
    mode, grid, _ = run
    sent = _sent_metrics(grid)
    assert len(grid.replies) == CLIENTS * 2 * 2 == len(sent)  # train + evaluate, 2 rounds
    keys = set().union(*sent)
    if mode == "all":
        assert keys >= PRIVATE
    else:
        assert keys <= set(CLEAR) and not keys & PRIVATE
        assert {"num-examples", "partition-id", "epsilon"} <= keys


def test_the_server_still_evaluates_and_records_epsilon(run):
    mode, _, run_dir = run
    rounds = pd.read_csv(run_dir / "rounds.csv")
    assert rounds["server_accuracy"].notna().all() and len(rounds) == 3
    clients = pd.read_csv(run_dir / "clients.csv")
    train = clients[clients["phase"] == "train"]
    assert train["epsilon"].notna().all() and (train["status"] == "ok").all()
    assert train["loss"].notna().all() == (mode == "all")
    assert train["loss"].isna().all() == (mode == "none")


def test_an_unknown_mode_names_the_flag_and_the_allowed_values():
    with pytest.raises(OptionError, match=r"^--client-metrics: .*all, none"):
        RunConfig.from_mapping({"client-metrics": "some"})
