"""``python -m fl_sim stop-flwr``: stop the local SuperLink that ``flwr run .`` left running.

Flower 1.42's ``flwr run`` starts a managed local SuperLink (``flower-superlink --insecure
--simulation --control-api-address 127.0.0.1:<port>``) in a session of its own and leaves
it running after the run, with the SuperExec it spawned. Only that SuperLink is matched
(by its control-API address, Flower's constant), so SuperLinks a user started by hand and
``./run.sh deploy``'s (which stops its own) are left alone. The whole process group goes,
SuperExec included: SIGTERM, then SIGKILL after ``grace`` seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path


def local_control_address() -> str:
    """Flower's address of the managed local SuperLink's control API."""
    from flwr.cli.constant import LOCAL_CONTROL_API_ADDRESS

    return LOCAL_CONTROL_API_ADDRESS


def _commands() -> Iterator[tuple[int, list[str]]]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # ended meanwhile, or not ours to read
        if raw:
            yield int(entry.name), [part.decode(errors="replace")
                                    for part in raw.rstrip(b"\0").split(b"\0")]


def managed_superlinks(address: str | None = None) -> list[int]:
    """Pids of SuperLinks ``flwr run`` started for local simulation."""
    address = address or local_control_address()
    found = []
    for pid, argv in _commands():
        program = Path(argv[0]).name if argv else ""
        if program != "flower-superlink" and not any(Path(a).name == "flower-superlink"
                                                     for a in argv[:2]):
            continue
        if "--simulation" in argv and "--control-api-address" in argv:
            index = argv.index("--control-api-address")
            if index + 1 < len(argv) and argv[index + 1] == address:
                found.append(pid)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has ended; only its parent has not collected it yet
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def stop(address: str | None = None, grace: float = 10.0) -> list[int]:
    """Stop every managed local SuperLink and its process group; return the pids stopped."""
    pids = managed_superlinks(address)
    groups = set()
    for pid in pids:
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            continue
    groups.discard(os.getpgrp())  # never this command's own group
    for group in groups:
        _signal(group, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for group in groups:
        _signal(group, signal.SIGKILL)
    return pids


def _signal(group: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sig)
