"""End to end under faults: failed rows, skipped rounds, kill -9 and --resume, sampling.

Seed 9 with --fail-rate 0.25 fails partitions 1 and 2 in rounds 1 and 3 (see
``FaultPlan``; tests/test_faults.py checks the draws), so with --min-replies 2 those
rounds are skipped and rounds 2 and 4 aggregate.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from fl_sim.run import checkpoint
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow

# 1,000 local epochs make a round last about a second, long enough to kill a run in it.
FAULTY = ["--task", "regression", "--clients", "3", "--rounds", "4", "--seed", "9",
          "--fail-rate", "0.25", "--min-replies", "2", "--checkpoint-every", "1",
          "--local-epochs", "1000"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def uninterrupted(ray_address, out):
    done = run_cli("run", *FAULTY, "--out", str(out), "--run-name", "whole",
                   "--ray-address", ray_address)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "whole"


@pytest.fixture(scope="module")
def resumed(ray_address, out):
    """Kill -9 the run once round 2 is checkpointed, then --resume it."""
    run_dir = out / "killed"
    # Stragglers 0.5 s late (of a 3,600 s timeout) are on time: nothing changes.
    on_time = ["--straggler-rate", "1", "--straggler-seconds", "0.5"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fl_sim", "run", *FAULTY, *on_time, "--out", str(out),
         "--run-name", "killed", "--ray-address", ray_address],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 300
    try:
        while True:
            path = run_dir / checkpoint.CHECKPOINT
            if path.exists() and checkpoint.load(run_dir).server_round >= 2:
                break
            assert proc.poll() is None, "the run ended before round 2"
            assert time.monotonic() < deadline, "no checkpoint of round 2"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = checkpoint.load(run_dir).server_round
    assert json.loads((run_dir / "config.json").read_text())["status"] == "running"
    done = run_cli("run", "--resume", str(run_dir), "--ray-address", ray_address)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir, killed_at, done.stdout


def test_failures_are_rows_and_thin_rounds_are_skipped(uninterrupted):
    clients = pd.read_csv(uninterrupted / "clients.csv")
    failed = clients[clients["status"] == "failed"]
    assert sorted(zip(failed["round"], failed["phase"], failed["partition_id"])) == sorted(
        (r, ph, p) for r in (1, 3) for ph in ("train", "evaluate") for p in (1, 2)
    )
    assert len(clients) == 4 * 2 * 3
    rounds = pd.read_csv(uninterrupted / "rounds.csv")
    assert list(rounds["status"]) == ["ok", "skipped", "ok", "skipped", "ok"]
    assert list(rounds["train_replies"].iloc[1:]) == [1, 3, 1, 3]
    # A skipped round keeps the global model: the server sees the same weights.
    weight = rounds["server_weight"]
    assert weight[1] == weight[0] and weight[3] == weight[2] and weight[2] != weight[1]


def test_resumed_run_matches_uninterrupted(uninterrupted, resumed):
    run_dir, killed_at, stdout = resumed
    assert killed_at == 2
    whole_c, res_c = (pd.read_csv(d / "clients.csv") for d in (uninterrupted, run_dir))
    key = ["round", "phase", "partition_id", "status"]
    assert len(res_c) == len(whole_c)
    assert (res_c[key].sort_values(key).values.tolist()
            == whole_c[key].sort_values(key).values.tolist())
    whole_r, res_r = (pd.read_csv(d / "rounds.csv") for d in (uninterrupted, run_dir))
    assert list(res_r["round"]) == [0, 1, 2, 3, 4]  # no round twice, none missing
    assert list(res_r["status"]) == list(whole_r["status"])
    for column in ("server_loss", "server_weight", "train_loss"):
        assert res_r[column].tolist() == pytest.approx(whole_r[column].tolist(), rel=1e-5,
                                                       nan_ok=True)
    assert res_r["server_loss"].notna().all()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["status"] == "finished"
    assert [r["resumed_from_round"] for r in config["resumes"]] == [2]
    assert "round 3/4" in stdout and "round 1/4" not in stdout


def test_stragglers_fail_only_their_own_late_replies(ray_address, out):
    """3 clients on 2 actors, replies 4 s late against a 1.5 s timeout: only the seeded
    stragglers fail, round 1's actor start-up costs no one, and every row names its client.
    """
    from fl_sim.app.faults import FaultPlan

    done = run_cli("run", "--task", "regression", "--clients", "3", "--rounds", "4",
                   "--seed", "0", "--straggler-rate", "0.5", "--straggler-seconds", "4",
                   "--round-timeout", "1.5", "--out", str(out), "--run-name", "stragglers",
                   "--ray-address", ray_address)
    assert done.returncode == 0, done.stderr[-3000:]
    plan = FaultPlan(seed=0, straggler_rate=0.5, straggler_seconds=4.0)
    late = {(r, p) for r in range(1, 5) for p in range(3) if plan.delay(r, p)}
    assert 0 < len(late) < 12  # the seed delays some clients, not all
    clients = pd.read_csv(out / "stragglers" / "clients.csv")
    assert len(clients) == 4 * 2 * 3 and clients["partition_id"].notna().all()
    failed = clients[clients["status"] == "failed"]
    assert {(r, p) for r, p in zip(failed["round"], failed["partition_id"])} == late
    assert len(failed) == 2 * len(late)  # both phases of a straggler's round
    rounds = pd.read_csv(out / "stragglers" / "rounds.csv").set_index("round")
    for r in range(1, 5):
        on_time = 3 - sum((r, p) in late for p in range(3))
        assert rounds.loc[r, "train_replies"] == on_time
        assert rounds.loc[r, "status"] == ("ok" if on_time else "skipped")


def _rounds_trained(run_dir) -> dict[int, int]:
    from fl_sim.app.client_state import ClientStates
    from fl_sim.options import RunConfig
    from strategies.fedavg import build_fedavg

    states = ClientStates(build_fedavg(RunConfig.from_mapping({})))
    states.load_state_dict(checkpoint.load(run_dir).states["client-states"])
    return {p: int(s["fl-sim.client"]["rounds-trained"]) for p, s in states.states.items()}


def test_client_state_continues_across_the_resume(uninterrupted, resumed):
    # Partition 0 trains in all 4 rounds, 1 and 2 fail in rounds 1 and 3. Had the
    # resumed clients restarted from an empty state, they would count 2, 1, 1.
    assert _rounds_trained(uninterrupted) == {0: 4, 1: 2, 2: 2}
    assert _rounds_trained(resumed[0]) == {0: 4, 1: 2, 2: 2}


def test_clients_per_round_samples_exactly(ray_address, out):
    done = run_cli("run", "--task", "regression", "--clients", "12", "--clients-per-round", "3",
                   "--rounds", "2", "--out", str(out), "--run-name", "sampled",
                   "--ray-address", ray_address)
    assert done.returncode == 0, done.stderr[-3000:]
    clients = pd.read_csv(out / "sampled" / "clients.csv")
    assert clients.groupby(["round", "phase"]).size().tolist() == [3, 3, 3, 3]
    assert (clients["status"] == "ok").all()
    assert clients["partition_id"].between(0, 11).all()
