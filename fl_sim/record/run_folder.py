"""The one reader of a run folder: its config, CSVs, summary, weights, epsilon and task.

Why one reader: the report, ``compare``, ``sample``, ``audit`` and ``--resume`` all
start from a run folder, perhaps long after the run ended and perhaps one a colleague
sent; they must agree on what a run folder is and fail the same way, with one line
naming the file, when it is not one. The folder's ``config.json`` holds every run-config
value, so the task is rebuilt exactly as the ServerApp built it (same seed, same data
split, same partitions), and the per-round weights under ``weights/`` are the global
models the server evaluated.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

from fl_core.options import UsageError

RUN_FILES = ("config.json", "rounds.csv", "clients.csv")
WEIGHTS_DIR = "weights"
_ROUND_FILE = re.compile(r"round_(\d+)\.pt$")

BEFORE_THE_KEY = {"gan-class-code": False}
"""What a run folder made before a key existed meant by it: a dcgan run from before the
class code has an uncoded generator, whatever today's default is."""


class RunFolderError(UsageError):
    """A run folder (or a round in it) that cannot be used; the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__("RUN_DIR", message)


class RunFolder:
    """A run folder, read lazily; nothing here writes.

    Parameters
    ----------
    path : path
        The folder, e.g. ``results/<run-id>``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        """``config.json``: settings, versions, status and times of the run."""
        return self.path / "config.json"

    def require(self) -> RunFolder:
        """Fail unless the folder exists and holds at least one of :data:`RUN_FILES`."""
        if not self.path.is_dir():
            raise RunFolderError(f"{self.path}: no such folder")
        if not any((self.path / name).exists() for name in RUN_FILES):
            raise RunFolderError(f"{self.path}: not a run folder (none of "
                                 f"{', '.join(RUN_FILES)}); give a folder under results/")
        return self

    # --- JSON files -----------------------------------------------------------------
    def json(self, name: str) -> dict[str, Any] | None:
        """A JSON file of the run as a dict; None when it is missing."""
        path = self.path / name
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RunFolderError(f"{path} is not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise RunFolderError(f"{path} holds no JSON object")
        return data

    def config(self) -> dict[str, Any]:
        """``config.json``.

        Raises
        ------
        RunFolderError
            If the folder is missing or has no (valid) config.json.
        """
        if not self.path.is_dir():
            raise RunFolderError(f"{self.path} does not exist")
        config = self.json("config.json")
        if config is None:
            raise RunFolderError(f"{self.path} is not a run folder (no config.json)")
        return config

    def settings(self) -> dict[str, Any]:
        """The run-config values the run was started with (``config.json`` ``settings``)."""
        settings = self.config().get("settings")
        if not isinstance(settings, dict):
            raise RunFolderError(f"{self.config_path} has no settings")
        return dict(settings)

    # --- the task and its weights ---------------------------------------------------
    def load_task(self, need: str | None = None) -> Any:
        """The run's task object, rebuilt from its settings.

        Parameters
        ----------
        need : str, optional
            A method the task must have (e.g. ``"synthesize"``); a run of a task without
            it is refused with a message naming the task.
        """
        from fl_core.options import OptionError
        from fl_sim.options import RunConfig, defaults
        from tasks import registry
        from tasks.base import Workspace

        # Keys added after the run was made take their defaults (they did not exist
        # then), except where today's default would build different networks.
        stored = self.settings()
        settings = {**defaults(), **BEFORE_THE_KEY,
                    **{k: v for k, v in stored.items() if k in defaults()}}
        settings["run-dir"] = str(self.path)
        try:
            cfg = RunConfig.from_mapping(settings)
        except OptionError as error:
            raise RunFolderError(f"{self.config_path}: {error}") from None
        task = registry.get(cfg.task)(cfg, Workspace(self.path))
        if need and not hasattr(task, need):
            raise RunFolderError(f"{self.path} is a {cfg.task!r} run; only dcgan runs "
                                 f"have a generator to use here")
        return task

    def rounds_with_weights(self) -> list[int]:
        """Rounds whose global weights were kept (``weights/round_XXX.pt``), ascending."""
        found = (_ROUND_FILE.search(p.name) for p in (self.path / WEIGHTS_DIR).glob("round_*.pt"))
        return sorted(int(m.group(1)) for m in found if m)

    def arrays_at(self, server_round: int | None = None) -> tuple[int, Any]:
        """(round, global weights as an ArrayRecord) of ``server_round``, or the last kept."""
        from flwr.app import ArrayRecord

        from fl_core.safe_load import load_tensors

        rounds = self.rounds_with_weights()
        if not rounds:
            raise RunFolderError(f"{self.path} keeps no per-round weights "
                                 f"(weights/round_XXX.pt)")
        chosen = rounds[-1] if server_round is None else server_round
        if chosen not in rounds:
            raise RunFolderError(f"round {server_round} does not exist in {self.path}; kept "
                                 f"rounds: {rounds[0]}..{rounds[-1]}")
        path = self.path / WEIGHTS_DIR / f"round_{chosen:03d}.pt"
        state = load_tensors(path, "round weights")
        try:
            return chosen, ArrayRecord(state)
        except Exception as error:  # noqa: BLE001 - a dict of something else than tensors
            raise RunFolderError(f"{path} holds no state dict of tensors "
                                 f"({type(error).__name__})") from None

    # --- privacy ----------------------------------------------------------------------
    def epsilon_at(self, server_round: int, source: str = "clients.csv") -> float | None:
        """Largest epsilon recorded in ``source`` up to ``server_round``.

        ``clients.csv`` (default) holds each client's sample-level epsilon; ``privacy.csv``
        the client-level epsilon of DP-FedAvg. None when the file has no epsilon (no such
        DP in the run). Epsilon is cumulative, so the largest value up to the round is the
        model's guarantee.
        """
        path = self.path / source
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
