"""``--tensorboard``: the round metrics as TensorBoard event files in ``RUN_DIR/tensorboard``.

TensorBoard is what Flower's, Opacus's and NVFlare's users already open, and it overlays
runs: ``tensorboard --logdir results`` shows every run folder's curves side by side. The
event files are written by the ``tensorboard`` package's writer (through
``torch.utils.tensorboard``), one scalar per numeric rounds.csv column at step = round,
grouped as ``train/``, ``evaluate/``, ``server/``, ``privacy/`` and ``replies/``. They are
written as each round ends (a running run can be watched) and can be written afterwards
for any run folder (``python -m fl_sim tensorboard RUN_DIR``); the CSVs stay the record.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

FOLDER = "tensorboard"
SKIPPED = {"run_id", "round", "status", "epsilon_level"}
GROUPS = (("train_", "train"), ("evaluate_", "evaluate"), ("server_", "server"))
PRIVACY = {"epsilon", "epsilon_max", "delta"}
COUNTS = {"train_replies", "train_failures", "evaluate_replies", "evaluate_failures"}


def tag(column: str) -> str:
    """The TensorBoard tag of a rounds.csv column: ``server_fid`` -> ``server/fid``."""
    if column in PRIVACY:
        return f"privacy/{column}"
    if column in COUNTS:
        return f"replies/{column}"
    if column == "seconds":
        return "time/round_seconds"
    for prefix, group in GROUPS:
        if column.startswith(prefix):
            return f"{group}/{column.removeprefix(prefix)}"
    return f"other/{column}"


def scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The numeric cells of a round row, by tag (empty and non-numeric cells left out)."""
    found = {}
    for column, value in row.items():
        if column in SKIPPED or isinstance(value, bool):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if number == number:  # NaN: not measured
            found[tag(column)] = number
    return found


class TensorBoardLog:
    """Event files of one run.

    Parameters
    ----------
    run_dir : Path
        The run folder; events go to ``run_dir/tensorboard``.
    """

    def __init__(self, run_dir: Path | str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(run_dir) / FOLDER
        self.writer = SummaryWriter(log_dir=str(self.folder))

    def add_round(self, row: Mapping[str, Any]) -> None:
        """Write one rounds.csv row and flush it, so TensorBoard shows it at once."""
        step = int(row["round"])
        for name, value in scalars(row).items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


def export(run_dir: Path | str) -> Path:
    """Write the event files of an existing run folder from its rounds.csv.

    Raises
    ------
    RunFolderError
        If ``run_dir`` is not a run folder or its rounds.csv is damaged.
    """
    from fl_sim.report.data import load_run

    run = load_run(run_dir)
    for old in (run.path / FOLDER).glob("events.out.tfevents.*"):
        old.unlink()  # a second export replaces the first instead of doubling its points
    log = TensorBoardLog(run.path)
    try:
        for row in run.rounds.to_dict("records"):
            log.add_round(row)
    finally:
        log.close()
    return log.folder
