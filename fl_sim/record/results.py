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

CLIENT_COLUMNS = (
    "run_id", "round", "phase", "partition_id", "node_id", "num_examples",
    "loss", "accuracy",
)
CLIENT_TRAILING = ("epsilon", "seconds", "status")
ROUND_COLUMNS = ("run_id", "round")
ROUND_TRAILING = (
    "train_replies", "train_failures", "evaluate_replies", "evaluate_failures",
    "epsilon_max", "epsilon", "epsilon_level", "delta", "seconds", "status",
)

# --- client-level privacy (DP-FedAvg) ---
PRIVACY_COLUMNS = (
    "run_id", "round", "epsilon", "delta", "noise_multiplier", "clipping_norm",
    "sampled_clients", "population", "accountant", "status", "sample_epsilon_max",
)


def client_columns(task_metrics: Sequence[str]) -> list[str]:
    """Columns of clients.csv for a task reporting ``task_metrics``."""
    return [*CLIENT_COLUMNS, *task_metrics, *CLIENT_TRAILING]


def round_columns(task_metrics: Sequence[str], server_metrics: Sequence[str]) -> list[str]:
    """Columns of rounds.csv: aggregated client metrics per phase, then server metrics."""
    client_side = ["loss", "accuracy", *task_metrics]
    return [
        *ROUND_COLUMNS,
        *(f"train_{m}" for m in client_side),
        *(f"evaluate_{m}" for m in client_side),
        *(f"server_{m}" for m in server_metrics),
        *ROUND_TRAILING,
    ]


class CsvLog:
    """An append-only CSV file with a fixed header.

    Rows with keys outside the header are refused (the schema is the contract with the
    report); missing keys are written empty.
    """

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path = path
        self.columns = list(columns)
        new = not path.exists() or path.stat().st_size == 0
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
        Task-specific client metric names (become columns of both CSVs).
    server_metrics : sequence of str
        Names returned by the task's central evaluation.
    """

    def __init__(
        self, run_dir: Path, task_metrics: Sequence[str], server_metrics: Sequence[str]
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.clients = CsvLog(self.run_dir / "clients.csv", client_columns(task_metrics))
        self.rounds = CsvLog(
            self.run_dir / "rounds.csv", round_columns(task_metrics, server_metrics)
        )
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
