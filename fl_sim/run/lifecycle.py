"""A run folder's life: naming and claiming it, resuming it, marking how it ended.

Why one module: the CLI claims a folder before Ray starts (so a clash or an unwritable
path fails at once), the ServerApp opens it (also under ``flwr run``, where no CLI ran),
a sweep claims one per grid point, and an interrupted or failed run is marked by
whichever process noticed. They share the rules here.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fl_core.atomic import write_json
from fl_core.versions import installed_versions
from fl_sim.options import OptionError, RunConfig, defaults, flag_of
from fl_sim.record.run_folder import RunFolder

PACKAGES = ("flwr", "torch", "opacus", "ray", "flwr-datasets", "numpy", "pandas")
RESUME_MAY_CHANGE = ("ray-address", "client-cpus", "client-gpus", "round-timeout", "cache",
                     "cache-dir", "tensorboard", "resume")
"""Settings a resumed run may change: where and how fast it runs, never what it computes
(a cache entry is used only where it holds the bits a fit would give)."""


def now() -> str:
    """Current UTC time, ISO 8601, as written in config.json."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """Versions of the packages that decide a run's numbers."""
    return installed_versions(PACKAGES)


def default_run_id(cfg: RunConfig) -> str:
    """``<UTC time>-<task>-<strategy>``: sortable, readable."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{cfg.task}-{cfg.strategy}"


def resolve_run_dir(cfg: RunConfig) -> Path:
    """Return the run folder: ``run-dir`` if set, else a new folder under ``out-dir``.

    Never reuses an existing folder: a clash gets a numeric suffix. The folder is
    created here (atomically), so two processes can never both take one name.
    """
    if cfg.run.run_dir:
        return Path(cfg.run.run_dir)
    base = Path(cfg.run.out_dir) / (cfg.run.run_name or default_run_id(cfg))
    candidate, n = base, 1
    while True:
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")


def claim_run_dir(cfg: RunConfig) -> RunConfig:
    """Create the run folder now, so clashes and unwritable paths fail before Ray starts.

    The data the run will read are checked first (:meth:`RunConfig.preflight`), so a
    defective data set leaves no run folder behind.

    Raises
    ------
    OptionError
        If a data file is defective, ``--out`` cannot be written or ``--run-name``
        already exists there.
    """
    cfg.preflight()
    out = Path(cfg.run.out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OptionError("out-dir", f"cannot create {out}: {error.strerror}") from None
    if not os.access(out, os.W_OK):
        raise OptionError("out-dir", f"{out} is not writable")
    if cfg.run.run_name:
        run_dir = out / cfg.run.run_name
        try:
            run_dir.mkdir()  # atomic: of two simultaneous starts, one gets the name
        except FileExistsError:
            raise OptionError("run-name", f"{run_dir} already exists; choose another name "
                                          "or omit it") from None
        except OSError as error:
            raise OptionError("out-dir", f"cannot create {run_dir}: {error.strerror}") from None
    else:
        try:
            run_dir = resolve_run_dir(cfg)
        except OSError as error:
            raise OptionError("out-dir", f"cannot create a run folder in {out}: "
                                         f"{error.strerror}") from None
    return replace(cfg, run=replace(cfg.run, run_dir=str(run_dir)))


def resume_config(overrides: dict[str, Any]) -> RunConfig:
    """The stored settings of the run in ``--resume RUN_DIR``, ready to continue it.

    Raises
    ------
    OptionError
        If RUN_DIR holds no run with a checkpoint, the run already finished, or a flag
        other than :data:`RESUME_MAY_CHANGE` is given (a resumed run computes the same).
    """
    from fl_sim.run.checkpoint import CHECKPOINT, load

    run_dir = Path(overrides["resume"])
    if not (run_dir / "config.json").exists():
        raise OptionError("resume", f"{run_dir} is not a run folder (no config.json)")
    stored = RunFolder(run_dir).settings()  # a damaged config.json fails here, named
    RunLock(run_dir).acquire().release()  # a run still running is refused here
    if not (run_dir / CHECKPOINT).exists():
        raise OptionError(
            "resume", f"{run_dir} has no {CHECKPOINT}; only runs with --checkpoint-every resume"
        )
    changed = sorted(set(overrides) - set(RESUME_MAY_CHANGE))
    if changed:
        raise OptionError(
            "resume", f"cannot change {', '.join(map(flag_of, changed))} of a resumed run; "
            f"allowed: {', '.join(flag_of(k) for k in RESUME_MAY_CHANGE if k != 'resume')}"
        )
    settings = {k: v for k, v in stored.items() if k in defaults()}
    settings.update(overrides, **{"resume": str(run_dir), "run-dir": str(run_dir)})
    cfg = RunConfig.from_mapping(settings).preflight()
    done = load(run_dir).server_round
    if done >= cfg.federation.num_server_rounds:
        raise OptionError(
            "resume", f"{run_dir} already finished its {cfg.federation.num_server_rounds} rounds"
        )
    return cfg


FRESH_SECONDS = 5.0
"""A lock file younger than this that cannot be read yet is being written, so held."""


class RunLock:
    """One process at a time writes a run folder: ``.fl-sim.lock`` holds its pid and host.

    Taken when a run starts or resumes and released when it ends; a lock whose process
    is gone (killed, crashed, the machine rebooted) is stale and is taken over, so a
    crash never leaves a run that cannot be resumed.

    Parameters
    ----------
    run_dir : Path
        The run folder.
    """

    NAME = ".fl-sim.lock"

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / self.NAME
        self.held = False

    def holder(self) -> dict[str, Any] | None:
        """The live process holding the lock, or None (free or stale)."""
        try:
            text = self.path.read_text()
        except OSError:
            return None  # missing
        try:
            owner = json.loads(text)
            pid, host = int(owner["pid"]), str(owner["host"])
        except (ValueError, KeyError, TypeError):
            if time.time() - self.path.stat().st_mtime < FRESH_SECONDS:
                return {"pid": "?", "host": "a process starting now"}  # being written
            return None  # torn long ago or foreign: nobody holds it
        if host != socket.gethostname():
            return owner  # another machine's process: cannot tell, so respect it
        if pid == os.getpid():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, another user's
        return owner

    def acquire(self) -> RunLock:
        """Take the lock: created exclusively (``O_EXCL``), so of two processes one wins.

        Raises
        ------
        OptionError
            Naming ``--resume`` and the process that holds it, if the run is running.
        """
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self.holder()
                if owner is not None:
                    raise OptionError("resume", f"{self.path.parent} is running (process "
                                                f"{owner['pid']} on {owner['host']}); wait "
                                                "for it to end or stop it first") from None
                self.path.unlink(missing_ok=True)  # stale: take it over
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": now()},
                          handle)
                handle.flush()
                os.fsync(handle.fileno())
            self.held = True
            return self
        raise OptionError("resume", f"{self.path} is being taken by another process; retry")

    def release(self) -> None:
        """Remove the lock if this process holds it."""
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def mark(run_dir: Path, status: str) -> None:
    """Record an ending the ServerApp could not record itself (config.json ``status``)."""
    folder = RunFolder(run_dir)
    if not folder.config_path.exists():
        return
    config = folder.config()
    if config.get("status") in (None, "running"):
        config["status"] = status
        write_json(folder.config_path, config)
