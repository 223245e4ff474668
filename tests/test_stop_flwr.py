"""stop-flwr stops the SuperLink `flwr run` leaves behind, and nothing else."""

from __future__ import annotations

import subprocess
import sys
import time

from fl_sim.run import stop_flwr

FAKE = "import time\ntime.sleep(120)\n"


def _start(tmp_path, address):
    program = tmp_path / "flower-superlink"
    program.write_text(FAKE)
    return subprocess.Popen([sys.executable, str(program), "--insecure", "--simulation",
                             "--control-api-address", address], start_new_session=True)


def test_only_the_managed_local_superlink_is_stopped(tmp_path):
    local = stop_flwr.local_control_address()
    managed = _start(tmp_path, local)
    other = _start(tmp_path, "127.0.0.1:1")  # a SuperLink someone else started
    try:
        deadline = time.monotonic() + 10
        while managed.pid not in stop_flwr.managed_superlinks() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stop_flwr.managed_superlinks() == [managed.pid]
        assert stop_flwr.stop(grace=5) == [managed.pid]
        assert managed.wait(timeout=5) is not None
        assert other.poll() is None
        assert stop_flwr.stop() == []  # nothing left: a second call is a no-op
    finally:
        for process in (managed, other):
            process.kill()
            process.wait()
