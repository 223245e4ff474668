"""Phase display and timing; the terminal's log filter and run.log."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import time

import pytest

from fl_sim.record import phases
from fl_sim.record.logs import KnownNoise
from tests.conftest import REPO


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_nested_phase_is_counted_once(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(phases.time, "perf_counter", clock)
    out = io.StringIO()
    timer = phases.PhaseClock("plain", out)
    timer.after = 0.0  # announce at once
    with timer.phase("rounds"):
        time.sleep(0.05)  # the announcing timer runs
        clock.now += 10
        with timer.phase("reference classifier"):
            time.sleep(0.05)
            clock.now += 4
        clock.now += 1
    assert timer.seconds == {"reference classifier": 4.0, "rounds": 11.0}
    assert out.getvalue().splitlines() == [
        "rounds ...", "reference classifier ...", "reference classifier: done in 4 s",
        "rounds: done in 15 s"]


def test_a_short_phase_says_nothing_but_is_timed():
    out = io.StringIO()
    timer = phases.PhaseClock("plain", out)
    with timer.phase("initial model"):
        pass
    with timer.phase("rounds", shown=False):
        pass
    assert out.getvalue() == "" and set(timer.seconds) == {"initial model", "rounds"}


def test_quiet_shows_nothing_and_a_busy_terminal_gets_lines(monkeypatch):
    out = io.StringIO()
    timer = phases.PhaseClock("quiet", out)
    with timer.phase("public prior", total=3) as advance:
        advance(1)
    assert out.getvalue() == "" and "public prior" in timer.seconds
    busy = phases.PhaseClock("rich", out, busy=lambda: True)
    busy.after = 0.0
    with busy.phase("reference classifier"):
        time.sleep(0.05)
    assert out.getvalue().startswith("reference classifier ...")


def test_rich_mode_leaves_one_line_per_phase():
    out = io.StringIO()
    timer = phases.PhaseClock("rich", out)
    timer.after = 0.0
    with timer.phase("public prior", total=2) as advance:
        advance(1)
        advance(1)
    assert out.getvalue().strip().endswith("public prior: done in 0 s")


@pytest.mark.parametrize(("message", "shown"), [
    ("Secure RNG turned off. This is perfectly fine for experimentation", False),
    ("Manually terminating ClientAppActor", False),
    ("round 3 train: node 7 failed: boom", True),
])
def test_known_noise_is_held_back_from_the_terminal(message, shown):
    import logging

    record = logging.LogRecord("x", logging.WARNING, __file__, 1, message, None, None)
    assert KnownNoise().filter(record) is shown


def test_run_log_keeps_what_the_terminal_hid(tmp_path):
    script = textwrap.dedent(f"""
        import logging, warnings
        from fl_sim.record import logs
        logs.configure("warning", verbose=False)
        logs.attach_run_log({str(tmp_path)!r})
        warnings.warn("Secure RNG turned off. This is perfectly fine for experimentation "
                      "as it allows for much faster training performance", UserWarning)
        logging.getLogger("flwr").warning("Manually terminating ClientAppActor")
        logging.getLogger("fl_sim.test").warning("a warning the user can act on")
        logging.getLogger("fl_sim.test").info("an info line")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 0, done.stderr
    terminal = done.stdout + done.stderr
    assert "a warning the user can act on" in terminal
    assert "Secure RNG" not in terminal and "Manually terminating" not in terminal
    assert "an info line" not in terminal  # below --log-level warning
    log = (tmp_path / "run.log").read_text()
    for text in ("Secure RNG", "Manually terminating", "a warning the user can act on",
                 "an info line"):
        assert text in log, text


def test_the_deploy_launcher_follows_rounds_csv_row_by_row(tmp_path):
    from fl_sim.record.progress import RoundsFollower, progress_line

    path = tmp_path / "rounds.csv"
    follower = RoundsFollower(path)
    assert follower.new_rows() == []  # not written yet
    path.write_text("run_id,round,server_loss,train_replies,status\nr,0,1.5,0,ok\nr,1,0.7")
    rows = follower.new_rows()  # the torn second row waits for its newline
    assert rows == [{"run_id": "r", "round": 0, "server_loss": 1.5, "train_replies": 0,
                     "status": "ok"}]
    with path.open("a") as handle:
        handle.write("5,2,ok\n")
    (row,) = follower.new_rows()
    assert row["round"] == 1 and progress_line(row, 3).startswith("round 1/3  server_loss 0.7")
    assert follower.new_rows() == []
