"""Connects a client-level DP strategy to privacy.csv, config.json and rounds.csv.

A strategy offers client-level accounting if it has ``privacy_row(round)`` (see
``strategies.dp.ClientLevelDP``); this module writes one privacy.csv row per round,
beside the largest sample-level (DP-SGD) epsilon of the same round from rounds.csv, and
records a budget stop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fl_sim.record.results import ResultsWriter


class PrivacyLog:
    """privacy.csv of one run.

    Parameters
    ----------
    writer : ResultsWriter
        Owner of the run folder.
    run_id : str
        Written in every row.
    strategy : object
        The client-level DP strategy (has ``privacy_row`` and ``stop``).
    """

    def __init__(self, writer: ResultsWriter, run_id: str, strategy: Any) -> None:
        self.writer = writer
        self.run_id = run_id
        self.strategy = strategy
        self.log = writer.open_privacy()

    @classmethod
    def attach(cls, writer: ResultsWriter, run_id: str, strategy: Any) -> PrivacyLog | None:
        """A log if ``strategy`` accounts client-level privacy, else None (no privacy.csv)."""
        return cls(writer, run_id, strategy) if hasattr(strategy, "privacy_row") else None

    def epsilon(self, server_round: int) -> float:
        """The client-level epsilon after ``server_round`` (its privacy.csv ``epsilon``)."""
        return float(self.strategy.privacy_row(server_round)["epsilon"])

    def end_round(self, server_round: int, round_row: Mapping[str, Any]) -> None:
        """Append the row of a finished round (round 0, the initial model, has none)."""
        if server_round <= 0:
            return
        self.log.append([{
            "run_id": self.run_id,
            **self.strategy.privacy_row(server_round),
            "sample_epsilon_max": round_row.get("epsilon_max"),
        }])

    def budget_stop(self, reason: str) -> dict[str, Any]:
        """Record the refused round in privacy.csv and config.json; return the stop."""
        stop = dict(self.strategy.stop or {})
        if stop:
            self.log.append([{"run_id": self.run_id, **self.strategy.privacy_row(stop["round"])}])
        self.writer.update_config(
            stop_reason=f"privacy budget: {reason}", privacy_budget_stop=stop
        )
        return stop
