"""A run folder's life: naming and claiming it, resuming it, marking how it ended.

Why one module: the CLI claims a folder before Ray starts (so a clash or an unwritable
path fails at once), the ServerApp opens it (also under ``flwr run``, where no CLI ran),
a sweep claims one per grid point, and an interrupted or failed run is marked by
whichever process noticed. They share the rules here.
"""

from __future__ import annotations

import os
import platform
from dataclasses import replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from fl_core.atomic import write_json
from fl_sim.options import OptionError, RunConfig, defaults, flag_of
from fl_sim.record.run_folder import RunFolder

PACKAGES = ("flwr", "torch", "opacus", "ray", "flwr-datasets", "numpy", "pandas")
RESUME_MAY_CHANGE = ("ray-address", "client-cpus", "client-gpus", "round-timeout", "resume")
"""Settings a resumed run may change: where and how fast it runs, never what it computes."""


def now() -> str:
    """Current UTC time, ISO 8601, as written in config.json."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """Versions of the packages that decide a run's numbers."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def default_run_id(cfg: RunConfig) -> str:
    """``<UTC time>-<task>-<strategy>``: sortable, readable."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{cfg.task}-{cfg.strategy}"


def resolve_run_dir(cfg: RunConfig) -> Path:
    """Return the run folder: ``run-dir`` if set, else a new folder under ``out-dir``.

    Never reuses an existing folder: a clash gets a numeric suffix.
    """
    if cfg.run.run_dir:
        return Path(cfg.run.run_dir)
    base = Path(cfg.run.out_dir) / (cfg.run.run_name or default_run_id(cfg))
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def claim_run_dir(cfg: RunConfig) -> RunConfig:
    """Create the run folder now, so clashes and unwritable paths fail before Ray starts.

    Raises
    ------
    OptionError
        If ``--out`` cannot be written or ``--run-name`` already exists there.
    """
    out = Path(cfg.run.out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OptionError("out-dir", f"cannot create {out}: {error.strerror}") from None
    if not os.access(out, os.W_OK):
        raise OptionError("out-dir", f"{out} is not writable")
    if cfg.run.run_name and (out / cfg.run.run_name).exists():
        raise OptionError(
            "run-name", f"{out / cfg.run.run_name} already exists; choose another name or omit it"
        )
    run_dir = resolve_run_dir(cfg)
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except OSError as error:
        raise OptionError("out-dir", f"cannot create {run_dir}: {error.strerror}") from None
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
    settings = {k: v for k, v in RunFolder(run_dir).settings().items() if k in defaults()}
    settings.update(overrides, **{"resume": str(run_dir), "run-dir": str(run_dir)})
    cfg = RunConfig.from_mapping(settings)
    done = load(run_dir).server_round
    if done >= cfg.federation.num_server_rounds:
        raise OptionError(
            "resume", f"{run_dir} already finished its {cfg.federation.num_server_rounds} rounds"
        )
    return cfg


def mark(run_dir: Path, status: str) -> None:
    """Record an ending the ServerApp could not record itself (config.json ``status``)."""
    folder = RunFolder(run_dir)
    if not folder.config_path.exists():
        return
    config = folder.config()
    if config.get("status") in (None, "running"):
        config["status"] = status
        write_json(folder.config_path, config)
