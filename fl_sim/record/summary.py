"""The end-of-run table: each client's last training and the global model.

Reads the run folder only, so it prints the same for a simulation, ``flwr run`` or a
deployment.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

SKIP = {"run_id", "round", "phase", "node_id", "status", "num_examples", "seconds"}


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "" if value != value else f"{value:.4g}"
    return str(value)


def summary_table(run_dir: Path) -> Table:
    """Per client: its final local model's metrics; then the global model's."""
    clients = pd.read_csv(run_dir / "clients.csv")
    trained = clients[(clients["phase"] == "train") & (clients["status"] == "ok")]
    last = trained.sort_values("round").groupby("partition_id").tail(1).sort_values("partition_id")
    columns = [c for c in last.columns if c not in SKIP and last[c].notna().any()]
    table = Table(title=f"Run {run_dir.name}")
    table.add_column("model")
    for column in columns:
        if column != "partition_id":
            table.add_column(column)
    for _, row in last.iterrows():
        table.add_row(
            f"client {int(row['partition_id'])} (round {int(row['round'])})",
            *(_fmt(row[c]) for c in columns if c != "partition_id"),
        )
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        final = json.loads(summary_path.read_text())
        table.add_row("global", *(_fmt(final.get(c, "")) for c in columns if c != "partition_id"))
    return table


def privacy_line(run_dir: Path) -> str | None:
    """``privacy: client-level epsilon 7.08 at delta 1e-05 after round 2``, or None."""
    try:
        rounds = pd.read_csv(run_dir / "rounds.csv")
    except (OSError, pd.errors.EmptyDataError):
        return None
    if "epsilon" not in rounds.columns:
        return None
    spent = rounds[rounds["epsilon"].notna()]
    if spent.empty:
        return None
    last = spent.iloc[-1]
    return (f"privacy: {last['epsilon_level']}-level epsilon {_fmt(float(last['epsilon']))} "
            f"at delta {_fmt(float(last['delta']))} after round {int(last['round'])}")


def print_summary(run_dir: Path) -> None:
    """Print the summary table, the global model's headline numbers, the privacy spent and
    the folder."""
    console = Console()
    console.print(summary_table(run_dir))
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        final = json.loads(summary_path.read_text())
        console.print("global model: " + ", ".join(f"{k} {_fmt(v)}" for k, v in final.items()))
    line = privacy_line(run_dir)
    if line:
        console.print(line)
    console.print(f"results: {run_dir}")
