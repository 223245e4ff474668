"""What a run shows while it trains: round k/R, replies and failures, metrics, epsilon.

On a terminal a rich progress bar stays at the bottom with one coloured line per
finished round above it; elsewhere (CI, ``flwr run`` logs, pipes) one plain line per
round; nothing with ``--quiet``. Fed by :class:`~fl_sim.record.recorder.RunRecorder`'s
``on_round`` callback, i.e. by the rounds.csv row just written.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

# rounds.csv columns shown, in this order, when the row has them.
SHOWN = (
    "train_loss", "evaluate_loss", "evaluate_accuracy", "server_loss", "server_accuracy",
    "server_fid", "server_inception_score", "server_reference_accuracy", "epsilon_max",
)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def metrics_text(row: Mapping[str, Any]) -> str:
    """``train_loss 0.12  server_accuracy 0.91 ...`` for the metrics the row has.

    Any other key naming an epsilon (e.g. a client-level one a DP strategy adds to the
    round row) is shown too, so privacy spent is never hidden.
    """
    # ``epsilon`` (the headline) repeats ``epsilon_max`` unless it is the client-level one
    shown = [*SHOWN, "epsilon"] if row.get("epsilon_level") == "client" else SHOWN
    keys = [*shown, *(k for k in row if "epsilon" in k and k not in (*shown, "epsilon"))]
    return "  ".join(f"{key} {row[key]:.4g}" for key in keys if _is_number(row.get(key)))


def replies_text(row: Mapping[str, Any]) -> str:
    """``replies 5 ok/0 failed`` (training), plus evaluation failures when any."""
    text = f"replies {row.get('train_replies', 0)} ok/{row.get('train_failures', 0)} failed"
    if row.get("evaluate_failures"):
        text += f" (evaluate: {row['evaluate_failures']} failed)"
    return text


def progress_line(row: Mapping[str, Any], total_rounds: int) -> str:
    """One plain progress line per finished round."""
    parts = [f"round {row['round']}/{total_rounds}"]
    metrics = metrics_text(row)
    if metrics:
        parts.append(metrics)
    if row["round"]:
        parts.append(replies_text(row))
        if _is_number(row.get("seconds")):
            parts.append(f"{row['seconds']:.1f}s")
    return "  ".join(parts)


def choose_mode(quiet: bool, stream: TextIO | None = None) -> str:
    """``quiet``, ``rich`` (a terminal) or ``plain`` (anything else)."""
    if quiet:
        return "quiet"
    stream = stream or sys.stdout
    isatty = getattr(stream, "isatty", None)
    return "rich" if isatty and isatty() else "plain"


class RoundProgress:
    """The progress display of one run.

    Parameters
    ----------
    total_rounds : int
        R in "round k/R".
    mode : str
        ``rich``, ``plain`` or ``quiet`` (see :func:`choose_mode`).
    stream : file, optional
        Where to write (default stdout).
    """

    def __init__(self, total_rounds: int, mode: str = "plain",
                 stream: TextIO | None = None) -> None:
        if mode not in ("rich", "plain", "quiet"):
            raise ValueError(f"mode must be rich, plain or quiet, got {mode!r}")
        self.total = total_rounds
        self.mode = mode
        self.stream = stream or sys.stdout
        self._bar = None
        self._task = None
        self._wanted = False

    def __enter__(self) -> RoundProgress:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def active(self) -> bool:
        """Whether the bar holds the terminal (a phase then prints lines instead)."""
        return self._bar is not None

    def start(self) -> None:
        """Show the bar (terminal only) once the first round row arrives.

        Waiting for round 0's row leaves the terminal to the phases before it (the
        reference classifier of the initial model's evaluation) and their spinners.
        """
        self._wanted = self.mode == "rich"

    def _show(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(
            TextColumn("[bold]round {task.completed}/{task.total}"), BarColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[latest]}"),
            console=Console(file=self.stream), transient=False,
        )
        self._task = self._bar.add_task("rounds", total=self.total, latest="waiting for clients")
        self._bar.start()

    def on_round(self, row: Mapping[str, Any]) -> None:
        """Show a finished round (round 0: the initial model's evaluation)."""
        if self.mode == "quiet":
            return
        if self._wanted and self._bar is None:
            self._show()
        if self.mode == "plain" or self._bar is None:
            print(progress_line(row, self.total), file=self.stream, flush=True)
            return
        failures = row.get("train_failures") or 0
        replies = f"[red]{replies_text(row)}[/red]" if failures else replies_text(row)
        line = f"[bold]round {row['round']}/{self.total}[/bold]  {metrics_text(row)}"
        if row["round"]:
            line += f"  {replies}"
            if _is_number(row.get("seconds")):
                line += f"  {row['seconds']:.1f}s"
        self._bar.console.print(line, highlight=False)
        latest = metrics_text({k: row.get(k) for k in ("server_accuracy", "server_fid",
                                                        "server_loss", "epsilon_max")})
        self._bar.update(self._task, completed=row["round"],
                         latest=(replies_text(row) + "  " if row["round"] else "") + latest)

    def close(self) -> None:
        """Stop the bar, leaving its last state on screen."""
        self._wanted = False
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class RoundsFollower:
    """The rows another process appends to a rounds.csv, as the progress display wants them.

    The Deployment Engine runs the ServerApp in a process of its own, whose terminal is a
    log file; the launcher follows the run folder instead, so its user sees each round
    as it ends. A torn last line (a row being written) is left for the next poll.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.seen = 0

    def new_rows(self) -> list[dict[str, Any]]:
        """Rows written since the last call, numbers as numbers."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError:
            return []
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines = lines[:-1]  # still being written
        rows = list(csv.DictReader(lines))
        fresh = rows[self.seen:]
        self.seen = len(rows)
        return [{key: _number(value) for key, value in row.items()} for row in fresh]


def _number(text: str | None) -> Any:
    if text is None or text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
