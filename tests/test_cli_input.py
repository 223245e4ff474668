"""Careless input: one line and exit 2 for every mistake, before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from fl_sim.cli import main
from fl_sim.options import OptionError, RunConfig
from tests.conftest import REPO


def _one_line(capsys, argv, *words):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.count("\n") == 1 and "usage:" not in err, err
    for word in words:
        assert word in err, err


def test_a_non_numeric_value_prints_one_line_and_points_to_help(capsys):
    _one_line(capsys, ["run", "--clients", "abc"], "--clients", "abc", "--help")


def test_an_unknown_flag_prints_one_line(capsys):
    _one_line(capsys, ["run", "--no-such-flag"], "--no-such-flag")


@pytest.mark.parametrize(("argv", "flag"), [
    (["run", "--hel"], "--hel"), (["run", "--client", "3"], "--client"),
    (["report", "x", "--ou", "y"], "--ou"), (["deploy", "--rou", "1"], "--rou"),
    (["sample", "x", "--form", "npz"], "--form")])
def test_abbreviations_are_errors_in_every_command(capsys, argv, flag):
    _one_line(capsys, argv, flag, f"fl_sim {argv[0]} --help")


def test_a_missing_command_prints_one_line(capsys):
    _one_line(capsys, [], "command")


def test_the_help_still_prints(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["run", "--help"])
    assert exited.value.code == 0 and "--clients" in capsys.readouterr().out


@pytest.mark.parametrize(("key", "value"), [
    ("lr", "inf"), ("lr", "nan"), ("max-grad-norm", "inf"), ("noise-multiplier", "-inf"),
    ("round-timeout", "inf"), ("target-epsilon", "nan"), ("gan-d-lr", "inf"),
    ("straggler-seconds", "inf"), ("server-lr", "nan"), ("clipping-norm", "1e400"),
])
def test_non_finite_numbers_are_refused(key, value):
    with pytest.raises(OptionError) as error:
        RunConfig.from_mapping({key: value, "task": "dcgan"})
    assert str(error.value).startswith("--") and "finite" in str(error.value)


def test_a_non_finite_flag_exits_2_before_any_folder(tmp_path, capsys):
    assert main(["run", "--lr", "inf", "--out", str(tmp_path / "out")]) == 2
    assert "--lr: must be a finite number" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("overrides", [
    {"min-replies": 3, "clients": 2},
    {"min-replies": 3, "clients": 10, "fraction-train": 0.2},
    {"min-replies": 4, "clients": 10, "clients-per-round": 3},
])
def test_a_quorum_larger_than_the_sampled_clients_is_refused(overrides):
    with pytest.raises(OptionError, match=r"^--min-replies: .*clients sampled per round"):
        RunConfig.from_mapping(overrides)


def test_claiming_a_run_name_is_atomic(tmp_path, monkeypatch):
    """Two starts that both saw the name free: only one may claim it."""
    from fl_sim.run import lifecycle

    cfg = RunConfig.from_mapping({"out-dir": str(tmp_path), "run-name": "same"})
    real_exists = type(tmp_path).exists
    monkeypatch.setattr(type(tmp_path), "exists",
                        lambda self: False if self.name == "same" else real_exists(self))
    lifecycle.claim_run_dir(cfg)
    with pytest.raises(OptionError, match="--run-name: .*already exists"):
        lifecycle.claim_run_dir(cfg)


def _resumable(tmp_path):
    from fl_sim.run import checkpoint
    from tests.test_checkpoint import _arrays

    run = tmp_path / "run"
    run.mkdir()
    settings = RunConfig.from_mapping({"checkpoint-every": 1, "num-server-rounds": 4,
                                       "clients": 3}).to_run_config()
    (run / "config.json").write_text(json.dumps({"settings": settings, "status": "running"}))
    checkpoint.Checkpointer(run, 1, 4).after_round(1, _arrays(1))
    return run


def test_resume_of_a_running_run_is_refused(tmp_path, capsys):
    from fl_sim.run.lifecycle import RunLock

    run = _resumable(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from fl_sim.run.lifecycle import RunLock;"
        f" RunLock(Path({str(run)!r})).acquire(); print('held', flush=True); time.sleep(60)")],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["run", "--resume", str(run)]) == 2
        err = capsys.readouterr().err
        assert "--resume" in err and "running" in err and str(holder.pid) in err
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: its lock is stale and is taken over
    lock = RunLock(run)
    lock.acquire()
    assert json.loads((run / lock.NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (run / lock.NAME).exists()


def test_of_simultaneous_lock_takers_exactly_one_wins(tmp_path):
    """Processes released together all try to lock one run folder: one gets it."""
    script = (
        "import sys, time; from pathlib import Path; from fl_sim.run.lifecycle import RunLock;"
        "from fl_sim.options import OptionError\n"
        "start = float(sys.argv[1])\n"
        "while time.time() < start: pass\n"
        "try:\n"
        f"    RunLock(Path({str(tmp_path)!r})).acquire(); print('won', flush=True)\n"
        "    time.sleep(3)\n"
        "except OptionError: print('refused', flush=True)\n")
    start = f"{time.time() + 4:.3f}"
    takers = [subprocess.Popen([sys.executable, "-c", script, start], cwd=REPO,
                               stdout=subprocess.PIPE, text=True) for _ in range(6)]
    outcomes = sorted(p.communicate(timeout=60)[0].strip() for p in takers)
    assert outcomes == ["refused"] * 5 + ["won"]


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0"])
def test_deploy_timeout_must_be_finite_and_positive(tmp_path, capsys, value):
    assert main(["deploy", "--deploy-timeout", value, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--deploy-timeout: must be a finite number > 0" in err
    assert not (tmp_path / "o").exists()


def test_checkpoints_and_secagg_are_refused_together():
    with pytest.raises(OptionError, match=r"^--checkpoint-every: .*--secagg.*epsilon"):
        RunConfig.from_mapping({"checkpoint-every": 1, "secagg": True, "clients": 4})
