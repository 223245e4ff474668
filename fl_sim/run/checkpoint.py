"""Checkpoints every K rounds and ``--resume`` of a killed run.

A checkpoint is one file, ``<run-dir>/checkpoint.pt``, replaced atomically after the
round row of every K-th round is on disk. It holds what the next round depends on:

- the global model's arrays after that round and the round number;
- the server's random states (Python's ``random`` samples nodes in Flower's strategies,
  NumPy and torch for anything a strategy or task draws on the server);
- ``states``: whatever each registered :class:`StateProvider` returns. The ServerApp
  registers the recorder (largest epsilon per partition, so ``epsilon_max`` continues
  instead of restarting at zero) and the strategy when it has ``state_dict``; a
  client-level DP accountant on the server, or a table of per-partition sample-level
  accountant states gathered from replies, registers the same way.

Resuming loads the checkpoint, cuts ``clients.csv``/``rounds.csv`` back to the
checkpointed round (rows of a half-finished round are dropped, so no round appears twice)
and runs the remaining rounds under :class:`RoundOffset`, which numbers them on from the
checkpoint so clients seed their training and faults exactly as in an uninterrupted run.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fl_core.atomic import replacing
from fl_core.safe_load import DamagedFile, load_tensors
from strategies.delegating import DelegatingStrategy

CHECKPOINT = "checkpoint.pt"
FORMAT = 2
"""Format 2 holds only what ``torch.load(weights_only=True)`` reads: tensors, numbers,
strings, bytes and containers. Format 1 (pickled client states and NumPy random states)
could run code when loaded and is refused."""


class StateProvider(Protocol):
    """Anything whose state must survive a resume (an accountant, a recorder)."""

    def state_dict(self) -> dict[str, Any]:
        """Return tensors, numbers, strings, bytes and containers of them (no objects)."""

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def rng_state() -> dict[str, Any]:
    """The server process's random states, as plain numbers and a tensor."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": str(kind), "key": [int(k) for k in key], "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }


def restore_rng(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], np.asarray(numpy["key"], dtype=np.uint32),
                         numpy["pos"], numpy["has_gauss"], numpy["gauss"]))
    torch.set_rng_state(state["torch"])


@dataclass
class Checkpoint:
    """What a resumed run starts from.

    Parameters
    ----------
    server_round : int
        Last finished round; the resumed run starts with ``server_round + 1``.
    planned_rounds : int
        ``num-server-rounds`` of the run.
    arrays : dict
        The global model's state dict after ``server_round``.
    rng : dict
        :func:`rng_state` after ``server_round``.
    states : dict
        Provider name -> its ``state_dict()``.
    """

    server_round: int
    planned_rounds: int
    arrays: dict[str, Any]
    rng: dict[str, Any]
    states: dict[str, Any] = field(default_factory=dict)

    def array_record(self) -> ArrayRecord:
        """The arrays as Flower's ``ArrayRecord``."""
        return ArrayRecord(self.arrays)


def save(run_dir: Path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint.pt`` through a temporary file and a rename."""
    path = Path(run_dir) / CHECKPOINT
    with replacing(path) as tmp:
        torch.save({"format": FORMAT, **checkpoint.__dict__}, tmp)
    return path


def load(run_dir: Path) -> Checkpoint:
    """Read ``checkpoint.pt`` of ``run_dir`` without running anything it holds.

    Raises
    ------
    DamagedFile
        If the file is missing, truncated, of another format, or asks to run code.
    """
    path = Path(run_dir) / CHECKPOINT
    data = load_tensors(path, "an fl-sim checkpoint")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise DamagedFile(path, f"checkpoint format {found!r}; this fl-sim reads format "
                                f"{FORMAT}")
    fields = {"server_round", "planned_rounds", "arrays", "rng", "states"}
    if not fields <= set(data):
        raise DamagedFile(path, f"checkpoint lacks {sorted(fields - set(data))}")
    return Checkpoint(**{k: data[k] for k in fields})


class Checkpointer:
    """Saves a checkpoint after every ``every``-th round.

    Parameters
    ----------
    run_dir : Path
        The run folder.
    every : int
        Rounds between checkpoints; 0 disables checkpoints.
    planned_rounds : int
        Stored so a resume knows where to stop.
    providers : mapping, optional
        Name -> :class:`StateProvider`; more can be added with :meth:`register`.
    """

    def __init__(
        self,
        run_dir: Path,
        every: int,
        planned_rounds: int,
        providers: Mapping[str, StateProvider] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.every = every
        self.planned_rounds = planned_rounds
        self.providers: dict[str, StateProvider] = dict(providers or {})

    def register(self, name: str, provider: StateProvider) -> None:
        """Include ``provider``'s state in every checkpoint under ``name``."""
        if name in self.providers:
            raise ValueError(f"state provider {name!r} is registered twice")
        self.providers[name] = provider

    def after_round(self, server_round: int, arrays: ArrayRecord) -> Path | None:
        """Save if ``server_round`` is due (and always after the last round)."""
        if not self.every or server_round <= 0:
            return None
        if server_round % self.every and server_round != self.planned_rounds:
            return None
        return save(
            self.run_dir,
            Checkpoint(
                server_round=server_round,
                planned_rounds=self.planned_rounds,
                arrays=arrays.to_torch_state_dict(),
                rng=rng_state(),
                states={name: p.state_dict() for name, p in self.providers.items()},
            ),
        )

    def restore(self, checkpoint: Checkpoint) -> None:
        """Hand each registered provider its saved state and restore the random states."""
        missing = set(self.providers) - set(checkpoint.states)
        if missing:
            raise ValueError(f"checkpoint lacks states of {sorted(missing)}")
        for name, provider in self.providers.items():
            provider.load_state_dict(checkpoint.states[name])
        restore_rng(checkpoint.rng)


def truncate_csv(path: Path, last_round: int) -> int:
    """Drop rows with ``round > last_round`` (atomically); return how many were dropped."""
    path = Path(path)
    if not path.exists():
        return 0
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        rows = list(reader)
    if header is None:
        return 0
    index = header.index("round")
    kept = [row for row in rows if row and int(row[index]) <= last_round]
    with replacing(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(kept)
    return len(rows) - len(kept)


class RoundOffset(DelegatingStrategy):
    """Present ``Strategy.start``'s rounds 1..n to ``strategy`` as ``offset+1..offset+n``.

    ``Strategy.start`` always counts from 1; a resumed run must continue the numbering
    (clients seed by round, rows are keyed by round). Outermost wrapper of a resumed run.

    Parameters
    ----------
    strategy : Strategy
        The run's strategy (with its recording wrapper).
    offset : int
        The checkpointed round.
    """

    def __init__(self, strategy: Strategy, offset: int) -> None:
        super().__init__(strategy)
        self.offset = offset

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Configure round ``server_round + offset``."""
        return self.strategy.configure_train(server_round + self.offset, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate round ``server_round + offset``."""
        return self.strategy.aggregate_train(server_round + self.offset, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Configure evaluation of round ``server_round + offset``."""
        return self.strategy.configure_evaluate(server_round + self.offset, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Aggregate evaluation of round ``server_round + offset``."""
        return self.strategy.aggregate_evaluate(server_round + self.offset, replies)
