"""Reads one run folder into tables for the report and ``compare``.

Only files are read (``config.json``, ``clients.csv``, ``rounds.csv``, ``privacy.csv``,
``summary.json``, ``samples/round_XXX.png``), so a finished, interrupted or still running
run reads the same way, whichever runtime wrote it. Every file and column is optional
except that the folder must hold at least one of config.json, rounds.csv, clients.csv.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fl_sim.record.run_folder import RunFolder, RunFolderError

SAMPLE_GRID = re.compile(r"round_(\d+)\.png$")

# The headline metric of a run, in order of preference: (rounds.csv column, higher is better).
# Server evaluation of the global model first, then the clients' aggregated evaluation.
MAIN_METRICS: tuple[tuple[str, bool], ...] = (
    ("server_accuracy", True),
    ("server_tstr_accuracy", True),  # conditional dcgan: what the synthetic data is worth
    ("server_fid", False),
    ("server_reference_accuracy", True),
    ("server_inception_score", True),
    ("server_loss", False),
    ("evaluate_accuracy", True),
    ("evaluate_loss", False),
    ("train_accuracy", True),
    ("train_loss", False),
)
# Columns of rounds.csv that are bookkeeping, never a metric.
ROUND_BOOKKEEPING = {
    "run_id", "round", "status", "seconds", "epsilon_max", "epsilon", "epsilon_level", "delta",
    "train_replies", "train_failures", "evaluate_replies", "evaluate_failures",
}
CLIENT_BOOKKEEPING = {
    "run_id", "round", "phase", "partition_id", "node_id", "num_examples", "epsilon",
    "delta", "noise_multiplier", "sample_rate", "dp_steps", "seconds", "status",
}
LOWER_IS_BETTER = ("loss", "fid", "frechet", "distance", "error", "_std")
"""Words of columns where smaller is better; a spread (``_std``) is smaller when steadier."""


def _read_csv(path: Path) -> pd.DataFrame:
    """A CSV as written by ``ResultsWriter``; empty frame when missing or header-only.

    A run killed in the middle of a write can leave a torn last line: skip it.
    """
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    try:
        frame = pd.read_csv(path, on_bad_lines="skip")
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError) as error:
        raise RunFolderError(f"{path} is not a CSV file fl-sim wrote "
                             f"({type(error).__name__})") from None
    if "round" not in frame.columns:
        raise RunFolderError(f"{path} has no 'round' column: not a CSV file fl-sim wrote")
    frame["round"] = pd.to_numeric(frame["round"], errors="coerce")
    frame = frame.dropna(subset=["round"])
    frame["round"] = frame["round"].astype(int)
    return frame


def higher_is_better(column: str) -> bool:
    """Whether a larger value of a metric column means a better model."""
    for name, higher in MAIN_METRICS:
        if column == name:
            return higher
    return not any(word in column for word in LOWER_IS_BETTER)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


@dataclass
class RunData:
    """The tables of one run folder.

    Attributes
    ----------
    path : Path
        The run folder.
    config : dict
        ``config.json`` (empty when missing).
    rounds, clients, privacy : pandas.DataFrame
        The CSVs; empty frames when missing.
    summary : dict
        ``summary.json`` (empty when missing: the run did not finish).
    samples : dict
        Round -> path of its fixed-noise sample grid, for GAN tasks.
    """

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    rounds: pd.DataFrame = field(default_factory=pd.DataFrame)
    clients: pd.DataFrame = field(default_factory=pd.DataFrame)
    privacy: pd.DataFrame = field(default_factory=pd.DataFrame)
    summary: dict[str, Any] = field(default_factory=dict)
    samples: dict[int, Path] = field(default_factory=dict)

    # --- settings ---------------------------------------------------------------
    @property
    def settings(self) -> dict[str, Any]:
        """The resolved run config (``config.json`` ``settings``)."""
        return dict(self.config.get("settings", {}))

    @property
    def name(self) -> str:
        """The run id (folder name when config.json lacks it)."""
        return str(self.config.get("run_id") or self.path.name)

    @property
    def planned_rounds(self) -> int | None:
        """``num-server-rounds`` of the settings."""
        value = _number(self.settings.get("num-server-rounds"))
        return int(value) if value else None

    @property
    def finished_rounds(self) -> int:
        """The last round with a rounds.csv row (0: only the initial model)."""
        if self.rounds.empty or "round" not in self.rounds:
            return 0
        return int(self.rounds["round"].max())

    @property
    def delta(self) -> float | None:
        """The delta epsilons are reported at (privacy.csv, else the settings)."""
        if "delta" in self.privacy.columns:
            values = self.privacy["delta"].dropna()
            if len(values):
                return float(values.iloc[-1])
        return _number(self.settings.get("delta"))

    @property
    def budget(self) -> float | None:
        """The ``max-epsilon`` budget, when one was set (> 0)."""
        value = _number(self.settings.get("max-epsilon"))
        return value if value and value > 0 else None

    # --- metrics ----------------------------------------------------------------
    def has(self, column: str) -> bool:
        """Whether rounds.csv has at least one value in ``column``."""
        return column in self.rounds.columns and self.rounds[column].notna().any()

    def metric_columns(self) -> list[str]:
        """Numeric rounds.csv columns with data, bookkeeping excluded."""
        found = []
        for column in self.rounds.columns:
            if column in ROUND_BOOKKEEPING or not self.has(column):
                continue
            if pd.api.types.is_numeric_dtype(self.rounds[column]):
                found.append(column)
        return found

    def main_metric(self) -> str | None:
        """The metric that measures utility: the first of MAIN_METRICS with data."""
        for column, _ in MAIN_METRICS:
            if self.has(column):
                return column
        columns = [c for c in self.metric_columns() if c.startswith("server_")]
        return (columns or self.metric_columns() or [None])[0]

    def client_metrics(self) -> list[str]:
        """clients.csv metric columns with at least one value (loss, accuracy, g_loss, ...)."""
        if self.clients.empty:
            return []
        return [
            c for c in self.clients.columns
            if c not in CLIENT_BOOKKEEPING and self.clients[c].notna().any()
            and pd.api.types.is_numeric_dtype(self.clients[c])
        ]

    def ok_clients(self, phase: str) -> pd.DataFrame:
        """The clients.csv rows of ``phase`` that replied."""
        if self.clients.empty or "phase" not in self.clients:
            return pd.DataFrame()
        rows = self.clients[self.clients["phase"] == phase]
        if "status" in rows:
            rows = rows[rows["status"] == "ok"]
        return rows

    def series(self, column: str) -> pd.Series:
        """A rounds.csv column indexed by round, without empty cells."""
        if not self.has(column):
            return pd.Series(dtype=float)
        return self.rounds.set_index("round")[column].dropna().astype(float)

    def final(self, column: str) -> float | None:
        """The column's value at the last round that has one."""
        values = self.series(column)
        return float(values.iloc[-1]) if len(values) else None

    # --- privacy ----------------------------------------------------------------
    def client_level_epsilon(self) -> pd.Series:
        """DP-FedAvg's epsilon per round (privacy.csv), indexed by round."""
        if self.privacy.empty or "epsilon" not in self.privacy:
            return pd.Series(dtype=float)
        rows = self.privacy.dropna(subset=["epsilon"])
        return rows.set_index("round")["epsilon"].astype(float)

    def sample_level_epsilon(self) -> pd.DataFrame:
        """Per client (columns) and round (index): cumulative DP-SGD epsilon of training."""
        rows = self.ok_clients("train")
        if rows.empty or "epsilon" not in rows or rows["epsilon"].isna().all():
            return pd.DataFrame()
        rows = rows.dropna(subset=["epsilon"])
        return rows.pivot_table(
            index="round", columns="partition_id", values="epsilon", aggfunc="last"
        ).sort_index()

    def epsilon(self) -> tuple[pd.Series, str]:
        """The run's headline epsilon per round and what it measures.

        Client-level (DP-FedAvg, privacy.csv) when present, else the largest sample-level
        epsilon of any client (rounds.csv ``epsilon_max``, else computed from clients.csv).
        """
        client_level = self.client_level_epsilon()
        if len(client_level):
            return client_level, "client-level"
        if self.has("epsilon_max"):
            return self.series("epsilon_max"), "sample-level (max over clients)"
        per_client = self.sample_level_epsilon()
        if not per_client.empty:
            return per_client.max(axis=1), "sample-level (max over clients)"
        return pd.Series(dtype=float), ""


def load_run(path: Path | str) -> RunData:
    """Read a run folder.

    Raises
    ------
    RunFolderError
        If ``path`` is not a folder, holds none of config.json, rounds.csv, clients.csv,
        or one of its files is damaged (named in the message).
    """
    folder = RunFolder(path).require()
    path = folder.path
    run = RunData(path=path)
    run.config = folder.json("config.json") or {}
    run.summary = folder.json("summary.json") or {}
    run.rounds = _read_csv(path / "rounds.csv")
    run.clients = _read_csv(path / "clients.csv")
    run.privacy = _read_csv(path / "privacy.csv")
    samples = path / "samples"
    if samples.is_dir():
        for file in samples.glob("round_*.png"):
            match = SAMPLE_GRID.search(file.name)
            if match and file.stat().st_size > 0:
                run.samples[int(match.group(1))] = file
    run.samples = dict(sorted(run.samples.items()))
    return run
