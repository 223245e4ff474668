"""Reopen a finished (or interrupted) run folder: its task, its weights, its epsilon.

Why: releasing synthetic data (``fl_sim sample``) and auditing it (``fl_sim audit``) both
start from a run folder long after the run ended. The folder's ``config.json`` holds every
run-config value, so the task is rebuilt exactly as the ServerApp built it (same seed,
same data split, same partitions), and the per-round weights under ``weights/`` are the
global models the server evaluated.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord

WEIGHTS_DIR = "weights"
_ROUND_FILE = re.compile(r"round_(\d+)\.pt$")


class RunFolderError(ValueError):
    """A run folder (or a round in it) that cannot be used; the message says why."""


def settings_of(run_dir: str | Path) -> dict[str, Any]:
    """The run-config values the run was started with (``config.json`` ``settings``)."""
    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise RunFolderError(f"{run_dir} does not exist")
    if not path.exists():
        raise RunFolderError(f"{run_dir} is not a run folder (no config.json)")
    return dict(json.loads(path.read_text())["settings"])


# What a run folder made before a key existed meant by it: a dcgan run from before the
# class code (fifth session) has an uncoded generator.
BEFORE_THE_KEY = {"gan-class-code": False}


def load_task(run_dir: str | Path, need: str | None = None) -> Any:
    """The run's task object, rebuilt from its settings.

    Parameters
    ----------
    need : str, optional
        A method the task must have (e.g. ``"synthesize"``); a run of a task without it
        is refused with a message naming the task.
    """
    from fl_sim.config import defaults
    from tasks import registry

    # Keys added after the run was made take their defaults (they did not exist then),
    # except where today's default would build different networks than the run's.
    settings = {**defaults(), **BEFORE_THE_KEY, **settings_of(run_dir)}
    settings["run-dir"] = str(run_dir)
    task = registry.get(str(settings["task"]))(settings)
    if need and not hasattr(task, need):
        raise RunFolderError(f"{run_dir} is a {settings['task']!r} run; only dcgan runs "
                             f"have a generator to use here")
    return task


def rounds_with_weights(run_dir: str | Path) -> list[int]:
    """Rounds whose global weights were kept (``weights/round_XXX.pt``), ascending."""
    folder = Path(run_dir) / WEIGHTS_DIR
    found = (_ROUND_FILE.search(p.name) for p in folder.glob("round_*.pt"))
    return sorted(int(m.group(1)) for m in found if m)


def arrays_at(run_dir: str | Path, server_round: int | None = None) -> tuple[int, ArrayRecord]:
    """(round, global weights) of ``server_round``, or of the last kept round when None."""
    import torch

    rounds = rounds_with_weights(run_dir)
    if not rounds:
        raise RunFolderError(f"{run_dir} keeps no per-round weights (weights/round_XXX.pt)")
    chosen = rounds[-1] if server_round is None else server_round
    if chosen not in rounds:
        raise RunFolderError(f"round {server_round} does not exist in {run_dir}; kept rounds: "
                             f"{rounds[0]}..{rounds[-1]}")
    state = torch.load(Path(run_dir) / WEIGHTS_DIR / f"round_{chosen:03d}.pt",
                       map_location="cpu", weights_only=True)
    return chosen, ArrayRecord(state)


def epsilon_at(run_dir: str | Path, server_round: int,
               source: str = "clients.csv") -> float | None:
    """Largest epsilon recorded in ``source`` up to ``server_round``.

    ``clients.csv`` (default) holds each client's sample-level epsilon; ``privacy.csv``
    the client-level epsilon of DP-FedAvg. None when the file has no epsilon (no such
    DP in the run). Epsilon is cumulative, so the largest value up to the round is the
    model's guarantee.
    """
    path = Path(run_dir) / source
    if not path.exists():
        return None
    best = None
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            value = row.get("epsilon") or ""
            if not value or int(row["round"]) > server_round:
                continue
            epsilon = float(value)
            if math.isfinite(epsilon) and (best is None or epsilon > best):
                best = epsilon
    return best
