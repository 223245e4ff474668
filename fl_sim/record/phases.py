"""The phases of a run outside its rounds: shown while they run, timed for the report.

Fitting the public prior takes a minute and more, the reference classifier seconds to
minutes; without a sign of life a user cannot tell a slow phase from a hung one. Each
phase shows a spinner (with a bar when its length is known) on a terminal, a start and an
end line elsewhere, nothing with ``--quiet``; every phase is logged and its seconds are
kept, so config.json can split the run's wall time into its phases. A phase inside
another (the reference classifier inside round 0's evaluation) counts only once: the
outer phase's seconds exclude it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

LOG = logging.getLogger(__name__)
Advance = Callable[[int], None]


class PhaseClock:
    """Times and shows named phases.

    Parameters
    ----------
    mode : str
        ``rich``, ``plain`` or ``quiet`` (:func:`fl_sim.record.progress.choose_mode`).
    stream : file, optional
        Where to write (default stdout).
    busy : callable, optional
        True while another live display (the rounds' bar) holds the terminal: a phase
        then prints lines instead of opening a second live display.
    """

    def __init__(self, mode: str = "plain", stream: TextIO | None = None,
                 busy: Callable[[], bool] = lambda: False) -> None:
        self.mode = mode
        self.stream = stream or sys.stdout
        self.busy = busy
        self.seconds: dict[str, float] = {}
        self.after = 2.0
        """Seconds a phase runs before it is announced (shorter ones stay silent)."""
        self._open: list[list] = []  # [name, seconds spent in inner phases]

    @contextmanager
    def phase(self, name: str, total: int | None = None,
              shown: bool = True) -> Iterator[Advance]:
        """Run a phase; the block receives ``advance(n)`` to move its bar by ``n`` of ``total``.

        A phase shorter than :attr:`after` seconds shows nothing (a cached prior, a small
        task); ``shown=False`` times a phase that has a display of its own (the rounds).
        """
        started = time.perf_counter()
        self._open.append([name, 0.0])
        LOG.info("%s: started", name)
        announced = threading.Event()
        display = self._display(name, total, announced) if shown else _nothing()
        with display as advance:
            try:
                yield advance
            finally:
                elapsed = time.perf_counter() - started
                _, inner = self._open.pop()
                self.seconds[name] = round(self.seconds.get(name, 0.0) + elapsed - inner, 3)
                if self._open:
                    self._open[-1][1] += elapsed
                LOG.info("%s: %.1f s", name, elapsed)
        spun = shown and self.mode == "rich" and elapsed >= self.after  # a spinner was up
        if announced.is_set() or spun:
            self._line(f"{name}: done in {elapsed:.0f} s")

    def _line(self, text: str) -> None:
        if self.mode != "quiet":
            print(text, file=self.stream, flush=True)

    @contextmanager
    def _display(self, name: str, total: int | None,
                 announced: threading.Event) -> Iterator[Advance]:
        if self.mode == "quiet":
            yield lambda n=1: None
            return
        if self.mode != "rich" or self.busy():
            def announce() -> None:
                announced.set()
                self._line(f"{name} ...")

            timer = threading.Timer(self.after, announce)
            timer.daemon = True
            timer.start()
            try:
                yield lambda n=1: None
            finally:
                timer.cancel()
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        columns = [SpinnerColumn(), TextColumn("{task.description}")]
        if total:
            columns += [BarColumn(), MofNCompleteColumn()]
        columns.append(TimeElapsedColumn())
        with Progress(*columns, console=Console(file=self.stream), transient=True) as bar:
            task = bar.add_task(name, total=total)
            yield lambda n=1: bar.advance(task, n)


@contextmanager
def _nothing() -> Iterator[Advance]:
    yield lambda n=1: None


def process_started_unix() -> float:
    """When this process started (Unix time), from /proc; now where /proc is missing.

    The run's wall time counts from here, so the interpreter's and the imports' seconds
    are part of it, as a user timing the command sees them.
    """
    import os
    from pathlib import Path

    try:
        stat = Path(f"/proc/{os.getpid()}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text()
                    .splitlines() if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def finish_timeline(run_dir) -> None:
    """Record the whole run's wall time in config.json (``total_seconds``) before its report.

    Counted from the launching process's start, so the start-up before the ServerApp (Ray,
    imports) and the shut-down after it are in the total; the report shows them as the
    part of the total that no named phase covers.
    """
    from pathlib import Path

    from fl_core.atomic import write_json
    from fl_sim.record.run_folder import RunFolder

    folder = RunFolder(Path(run_dir))
    if not folder.config_path.exists():
        return
    config = folder.config()
    config["total_seconds"] = round(time.time() - process_started_unix(), 1)
    write_json(folder.config_path, config)
