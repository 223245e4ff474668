"""Ctrl-C and SIGTERM: keep what is finished, say so, and end within seconds.

Why not a KeyboardInterrupt: Flower's simulation runs the ServerApp in a non-daemon
thread that waits for replies (up to ``--round-timeout``) and tears Ray down from
another; unwinding through it left the process waiting in thread joins for minutes, or
crashed it inside Ray. So the first signal runs the run's own ending (mark the run
folder ``interrupted``, write the report; every finished round is already on disk) and
then ends the process with 130 (SIGINT) or 143 (SIGTERM), without waiting for Flower's
threads. Ray's processes share the driver's fate and stop with it; actors on a joined
cluster belong to this driver and are ended by the cluster when it goes. A second signal
ends the process at once.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class SignalGuard:
    """The handler :func:`ending_on_signal` installs; :meth:`install` puts it back.

    ``ray.init`` installs its own SIGTERM handler (``sys.exit`` in the main thread), so the
    run calls :meth:`install` again once Ray is up.
    """

    def __init__(self, ending: Callable[[int], None]) -> None:
        self.ending = ending
        self.stopping = False

    def handle(self, signum: int, _frame: object) -> None:
        """Run the ending once, then end the process; a second signal ends it at once."""
        code = EXIT_CODES.get(signal.Signals(signum), 128 + signum)
        if self.stopping:
            os._exit(code)
        self.stopping = True
        try:
            self.ending(code)
        except BaseException as error:  # noqa: BLE001 - the exit code matters more now
            print(f"fl_sim: while stopping: {error}", file=sys.stderr)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def install(self) -> None:
        """Handle SIGINT and SIGTERM here (main thread only, as Python requires)."""
        for sig in EXIT_CODES:
            signal.signal(sig, self.handle)


@contextmanager
def ending_on_signal(ending: Callable[[int], None]) -> Iterator[SignalGuard]:
    """While inside, SIGINT/SIGTERM run ``ending(exit_code)`` and end the process.

    Parameters
    ----------
    ending : callable
        Called once with 130 or 143 on the first signal; it records the interruption.
        Whatever it raises, the process then ends with that code.
    """
    previous = {sig: signal.getsignal(sig) for sig in EXIT_CODES}
    guard = SignalGuard(ending)
    guard.install()
    try:
        yield guard
    finally:
        for sig, old in previous.items():
            signal.signal(sig, signal.SIG_DFL if old is None else old)  # None: set in C


@contextmanager
def terminate_as_interrupt() -> Iterator[dict[str, int]]:
    """While inside, SIGTERM raises KeyboardInterrupt like Ctrl-C; yields the exit code.

    For launchers whose own ``except KeyboardInterrupt`` stops what they started (the
    Deployment Engine's processes): ``codes["exit"]`` is 130 after Ctrl-C, 143 after
    SIGTERM.
    """
    codes = {"exit": EXIT_CODES[signal.SIGINT]}

    def handler(signum: int, _frame: object) -> None:
        codes["exit"] = EXIT_CODES[signal.SIGTERM]
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield codes
    finally:
        signal.signal(signal.SIGTERM, previous)
