"""--sweep-parallel: how many points at once, and the runner's output, failures and signals.

The runner is exercised with stand-in point processes (small Python scripts), so these
tests need no Ray; tests/test_e2e_sweep_parallel.py runs real points.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from fl_sim.cli import main
from fl_sim.options import RunConfig
from fl_sim.run import parallel
from fl_sim.run.parallel import points_at_once, run_points
from fl_sim.run.sweep import plan

# A stand-in point: marks its start, prints a line on stdout and one on stdout or stderr,
# checks that one of AFTER has ended, waits for the starts in WAIT (its neighbours), marks
# its end and exits with CODE; with a "hold" mark it runs until a signal stops it.
POINT = """
import os, signal, sys, time
name, marks, wait, after, code = *sys.argv[1:5], int(sys.argv[5])
def stop(signum, frame):
    print(f"stopping on {signum}", flush=True)
    sys.exit(130)
signal.signal(signal.SIGINT, stop)
mark = lambda what: os.path.exists(os.path.join(marks, what))
open(os.path.join(marks, name), "w").close()
print(f"round 0/1 of {name}", flush=True)
if code:
    print(f"a problem in {name}", file=sys.stderr, flush=True)
else:
    print(f"round 1/1 of {name}", flush=True)
if after and not any(mark(a + ".done") for a in after.split(",")):
    sys.exit(3)
deadline = time.monotonic() + 60
while wait and not all(mark(w) for w in wait.split(",")):
    if time.monotonic() > deadline:
        sys.exit(4)
    time.sleep(0.02)
while mark("hold"):
    time.sleep(0.05)
open(os.path.join(marks, name + ".done"), "w").close()
sys.exit(code)
"""


def _configs(tmp_path: Path, lrs: tuple[str, ...]) -> list[RunConfig]:
    _, configs = plan([f"lr={','.join(lrs)}"], {"out-dir": str(tmp_path), "run-name": "sw"})
    return configs


def _stand_in(marks: Path, waits: dict[str, str], after: dict[str, str],
              codes: dict[str, int]):
    def command(cfg: RunConfig, num_cpus: int | None, verbose: bool) -> list[str]:
        name = cfg.run.run_name
        return [sys.executable, "-c", POINT, name, str(marks), waits.get(name, ""),
                after.get(name, ""), str(codes.get(name, 0))]

    return command


@pytest.mark.parametrize(("cpus", "client_cpus", "wanted", "points", "expected"), [
    (2, 1.0, 0, 4, (2, 1)),      # two cores, one CPU per client: two points of one CPU
    (16, 1.0, 0, 4, (4, 4)),     # a bigger machine: every point at once, 4 CPUs each
    (16, 4.0, 0, 8, (4, 4)),     # clients of 4 CPUs: four points hold one client each
    (2, 2.0, 0, 4, (1, None)),   # one client fills the machine: one after another
    (2, 0.5, 0, 4, (2, 1)),      # Ray counts whole CPUs: a point needs one
    (None, 1.0, 0, 4, (1, None)),  # CPUs unknown
    (2, 1.0, 1, 4, (1, None)),   # --sweep-parallel 1: the sequential sweep
    (2, 1.0, 3, 2, (2, 1)),      # never more than the points
    (2, 1.0, 4, 4, (4, 1)),      # asked for: four points, still one client's CPU each
])
def test_points_at_once_fit_the_cpus(monkeypatch, cpus, client_cpus, wanted, points,
                                     expected):
    monkeypatch.setattr(parallel, "cpu_count", lambda: cpus)
    cfg = RunConfig.from_mapping({"client-cpus": client_cpus, "sweep-parallel": wanted})
    assert points_at_once(cfg, points) == expected


def test_a_cluster_runs_points_one_after_another_and_refuses_more(monkeypatch, tmp_path,
                                                                   capsys):
    monkeypatch.setattr(parallel, "cpu_count", lambda: 16)
    cfg = RunConfig.from_mapping({"ray-address": "127.0.0.1:6379"})
    assert points_at_once(cfg, 4) == (1, None)
    code = main(["run", "--out", str(tmp_path), "--sweep", "lr=0.1,0.2", "--sweep-parallel",
                 "2", "--ray-address", "127.0.0.1:6379"])
    assert code == 2
    assert "--sweep-parallel: runs each point on a Ray of its own" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    assert main(["run", "--sweep", "sweep-parallel=1,2"]) == 2  # not a swept key


def test_points_run_at_once_prefixed_and_a_failure_leaves_the_others(tmp_path, capsys):
    marks = tmp_path / "marks"
    marks.mkdir()
    configs = _configs(tmp_path, ("0.01", "0.02", "0.03"))
    # The first two wait for each other's start (they must run at once, else exit 4);
    # the third checks that one of them has ended (two at a time, else exit 3); the
    # second fails.
    command = _stand_in(marks, {"lr-0.01": "lr-0.02", "lr-0.02": "lr-0.01"},
                        {"lr-0.03": "lr-0.01,lr-0.02"}, {"lr-0.02": 1})
    code, started = run_points(configs, at_once=2, num_cpus=1, command=command)
    out, err = capsys.readouterr()
    assert code == 1, out + err
    assert started == [tmp_path / "sw" / f"lr-{lr}" for lr in ("0.01", "0.02", "0.03")]
    assert all(path.is_dir() for path in started)
    for name in ("lr-0.01", "lr-0.03"):
        assert f"{name} | round 0/1 of {name}\n" in out
        assert f"{name} | round 1/1 of {name}\n" in out
        assert f"sweep: {name} finished (exit code 0)" in out
    assert "lr-0.02 | a problem in lr-0.02\n" in err
    assert "sweep: lr-0.02 failed (exit code 1)" in err
    assert f"sweep 3/3: lr-0.03 -> {tmp_path / 'sw' / 'lr-0.03'}\n" in out
    assert all(" | " in line or line.startswith("sweep") for line in out.splitlines())


def test_a_signal_reaches_every_running_point_and_no_new_one_starts(tmp_path, capsys):
    marks = tmp_path / "marks"
    marks.mkdir()
    (marks / "hold").touch()  # the points run until stopped
    configs = _configs(tmp_path, ("0.01", "0.02", "0.03"))
    command = _stand_in(marks, {}, {}, {})
    before = signal.getsignal(signal.SIGINT)

    def interrupt_once_both_run() -> None:
        deadline = time.monotonic() + 60
        while not ((marks / "lr-0.01").exists() and (marks / "lr-0.02").exists()):
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        time.sleep(0.2)  # their handlers are in place once they have printed
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_both_run, daemon=True).start()
    code, started = run_points(configs, at_once=2, num_cpus=1, command=command)
    out, err = capsys.readouterr()
    assert code == 130
    assert [path.name for path in started] == ["lr-0.01", "lr-0.02"]
    assert not (tmp_path / "sw" / "lr-0.03").exists()
    for name in ("lr-0.01", "lr-0.02"):
        assert f"{name} | stopping on {int(signal.SIGINT)}" in out
        assert f"sweep: {name} interrupted (exit code 130)" in err
    assert signal.getsignal(signal.SIGINT) is before  # put back


def test_a_folder_that_cannot_be_claimed_starts_no_further_point(tmp_path, capsys):
    from fl_core.options import OptionError
    from fl_sim.run.lifecycle import claim_run_dir

    marks = tmp_path / "marks"
    marks.mkdir()

    def claim(cfg: RunConfig) -> RunConfig:
        if cfg.run.run_name == "lr-0.02":
            raise OptionError("out-dir", "cannot create it: disk full")
        return claim_run_dir(cfg)

    configs = _configs(tmp_path, ("0.01", "0.02", "0.03"))
    code, started = run_points(configs, at_once=1, num_cpus=None,
                               command=_stand_in(marks, {}, {}, {}), claim=claim)
    out, err = capsys.readouterr()
    assert code == 2
    assert [path.name for path in started] == ["lr-0.01"]
    assert "sweep: lr-0.01 finished (exit code 0)" in out
    assert "fl_sim: error: --out: cannot create it: disk full" in err
    assert not (tmp_path / "sw" / "lr-0.03").exists()


@pytest.mark.parametrize(("share", "threads"), [("1", 1), ("0", None)])
def test_a_point_keeps_its_own_torch_to_its_cpu_share(monkeypatch, tmp_path, share, threads):
    import torch

    from fl_sim.run import parallel, simulation

    seen = {}

    def fake_simulate(cfg, verbose, num_cpus=None, wait_for_ray=True):
        seen.update(threads=torch.get_num_threads(), num_cpus=num_cpus)
        return 0

    before = torch.get_num_threads()
    monkeypatch.setattr(simulation, "simulate", fake_simulate)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.setdefault("set", n))
    settings = RunConfig.from_mapping({"task": "regression", "out-dir": str(tmp_path)})
    assert parallel.point_main([json.dumps(settings.to_run_config()), share]) == 0
    assert seen.get("set") == threads and seen["num_cpus"] == threads
    assert torch.get_num_threads() == before
