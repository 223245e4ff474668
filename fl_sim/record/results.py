"""Writes a run folder: config.json, clients.csv, rounds.csv and model weights.

Only writes; plotting reads these files later (``fl_sim.report.build``). Every append is
flushed and fsynced, so a run killed at any point keeps every finished round.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fl_core.atomic import replacing, write_json

CLIENT_COLUMNS = ("run_id", "round", "phase", "partition_id", "node_id", "num_examples")
CLIENT_PRIVACY = ("epsilon", "delta", "noise_multiplier", "sample_rate", "dp_steps")
"""Sample-level DP-SGD columns of clients.csv: the client's cumulative epsilon at delta,
and the sigma, Poisson sample rate and optimizer steps of its round (public values)."""
CLIENT_TRAILING = ("seconds", "status")
ROUND_COLUMNS = ("run_id", "round")
ROUND_COUNTS = ("train_replies", "train_failures", "evaluate_replies", "evaluate_failures")
ROUND_TRAILING = ("seconds", "status")

# --- client-level privacy (DP-FedAvg) ---
PRIVACY_COLUMNS = (
    "run_id", "round", "epsilon", "delta", "noise_multiplier", "clipping_norm",
    "sampled_clients", "population", "accountant", "status", "sample_epsilon_max",
)


def client_columns(task_metrics: Sequence[str], sample_dp: bool = False) -> list[str]:
    """Columns of clients.csv for a task whose clients report ``task_metrics``.

    Only columns the run can fill: the DP-SGD columns exist when the task trains with
    sample-level DP.
    """
    return [*CLIENT_COLUMNS, *task_metrics, *(CLIENT_PRIVACY if sample_dp else ()),
            *CLIENT_TRAILING]


def round_columns(
    train_metrics: Sequence[str], server_metrics: Sequence[str],
    evaluate_metrics: Sequence[str] | None = None, sample_dp: bool = False,
    client_dp: bool = False,
) -> list[str]:
    """Columns of rounds.csv: aggregated client metrics per phase, server metrics, privacy.

    ``epsilon_max`` (the largest sample-level epsilon) exists with DP-SGD; the headline
    ``epsilon``, its ``epsilon_level`` and ``delta`` with any DP.
    """
    evaluated = train_metrics if evaluate_metrics is None else evaluate_metrics
    privacy = (("epsilon_max",) if sample_dp else ()) + (
        ("epsilon", "epsilon_level", "delta") if sample_dp or client_dp else ())
    return [
        *ROUND_COLUMNS,
        *(f"train_{m}" for m in train_metrics),
        *(f"evaluate_{m}" for m in evaluated),
        *(f"server_{m}" for m in server_metrics),
        *ROUND_COUNTS, *privacy, *ROUND_TRAILING,
    ]


class CsvLog:
    """An append-only CSV file with a fixed header.

    Rows with keys outside the header are refused (the schema is the contract with the
    report); missing keys are written empty. A file that exists already (a resumed run)
    keeps its own header, so rows continue under the columns it was started with.
    """

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path = path
        new = not path.exists() or path.stat().st_size == 0
        self.columns = list(columns) if new else _header(path) or list(columns)
        self._handle = path.open("a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._handle, fieldnames=self.columns, restval="")
        if new:
            self._writer.writeheader()
            self._sync()

    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append ``rows`` and force them to disk."""
        for row in rows:
            unknown = set(row) - set(self.columns)
            if unknown:
                raise KeyError(f"{self.path.name}: columns not in header: {sorted(unknown)}")
            self._writer.writerow({k: _cell(v) for k, v in row.items()})
        self._sync()

    def _sync(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        """Close the file."""
        self._handle.close()


def _header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle), [])


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value


class ResultsWriter:
    """The files of one run folder.

    Parameters
    ----------
    run_dir : Path
        Created if missing.
    task_metrics : sequence of str
        The metrics clients report after training (columns of both CSVs).
    server_metrics : sequence of str
        Names returned by the task's central evaluation.
    evaluate_metrics : sequence of str, optional
        The metrics clients report after evaluation, when fewer than ``task_metrics``.
    sample_dp : bool
        The task trains with DP-SGD: clients.csv gets the privacy columns.
    client_dp : bool
        The strategy accounts a client-level epsilon (DP-FedAvg).
    """

    def __init__(
        self, run_dir: Path, task_metrics: Sequence[str], server_metrics: Sequence[str],
        evaluate_metrics: Sequence[str] | None = None, sample_dp: bool = False,
        client_dp: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.clients = CsvLog(self.run_dir / "clients.csv",
                              client_columns(task_metrics, sample_dp))
        self.rounds = CsvLog(self.run_dir / "rounds.csv", round_columns(
            task_metrics, server_metrics, evaluate_metrics, sample_dp, client_dp))
        self._config: dict[str, Any] = {}
        self.privacy: CsvLog | None = None

    def open_privacy(self) -> CsvLog:
        """Create privacy.csv (client-level DP runs only): one row per round."""
        if self.privacy is None:
            self.privacy = CsvLog(self.run_dir / "privacy.csv", PRIVACY_COLUMNS)
        return self.privacy

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Replace config.json with ``config``."""
        self._config = dict(config)
        write_json(self.run_dir / "config.json", self._config)

    def resume_config(self, **changes: Any) -> None:
        """Continue the config.json of a resumed run: status back to running, ``changes`` added."""
        from fl_sim.record.run_folder import RunFolder

        self._config = RunFolder(self.run_dir).config()
        self._config["resumes"] = [*self._config.get("resumes", []), changes]
        self._config.update(status="running", finished_at=None)
        write_json(self.run_dir / "config.json", self._config)

    def update_config(self, **changes: Any) -> None:
        """Merge ``changes`` into config.json (end time, exit status, ...)."""
        self._config.update(changes)
        write_json(self.run_dir / "config.json", self._config)

    def write_json(self, name: str, data: Mapping[str, Any]) -> None:
        """Write another JSON file of the run (e.g. ``summary.json``)."""
        write_json(self.run_dir / name, data)

    def save_state_dict(self, state_dict: Mapping[str, Any], name: str = "model.pt") -> Path:
        """Save torch weights atomically, so an interrupted run keeps a loadable file."""
        import torch

        path = self.run_dir / name
        with replacing(path) as tmp:
            torch.save(dict(state_dict), tmp)
        return path

    def close(self) -> None:
        """Close the CSV files."""
        self.clients.close()
        self.rounds.close()
        if self.privacy is not None:
            self.privacy.close()
