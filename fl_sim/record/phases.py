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
        self._open: list[list] = []  # [name, seconds spent in inner phases]

    @contextmanager
    def phase(self, name: str, total: int | None = None) -> Iterator[Advance]:
        """Run a phase; the block receives ``advance(n)`` to move its bar by ``n`` of ``total``."""
        started = time.perf_counter()
        self._open.append([name, 0.0])
        LOG.info("%s: started", name)
        with self._display(name, total) as advance:
            try:
                yield advance
            finally:
                elapsed = time.perf_counter() - started
                _, inner = self._open.pop()
                self.seconds[name] = round(self.seconds.get(name, 0.0) + elapsed - inner, 3)
                if self._open:
                    self._open[-1][1] += elapsed
                LOG.info("%s: %.1f s", name, elapsed)
        self._line(f"{name}: done in {elapsed:.0f} s")

    def _line(self, text: str) -> None:
        if self.mode != "quiet":
            print(text, file=self.stream, flush=True)

    @contextmanager
    def _display(self, name: str, total: int | None) -> Iterator[Advance]:
        if self.mode != "rich" or self.busy():
            self._line(f"{name} ...")
            yield lambda n=1: None
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
def untimed(name: str, total: int | None = None) -> Iterator[Advance]:
    """A phase nobody watches (clients, tests, in-process loops)."""
    yield lambda n=1: None
