"""Flower ServerApp: composes task, strategy and results writer for one run.

The same app runs under ``python -m fl_sim run`` (in-process simulation), ``flwr run``
and the Deployment Engine; everything it needs comes from ``context.run_config``.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fl_sim.config import RunConfig
from fl_sim.recorder import RunRecorder
from fl_sim.results import ResultsWriter
from strategies import registry as strategy_registry
from strategies.recording import RecordingStrategy
from tasks import registry as task_registry

LOG = logging.getLogger("fl_sim")
PACKAGES = ("flwr", "torch", "opacus", "ray", "flwr-datasets", "numpy", "pandas")

app = ServerApp()


def now() -> str:
    """Current UTC time, ISO 8601, as written in config.json."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{cfg.task}-{cfg.strategy}"


def resolve_run_dir(cfg: RunConfig) -> Path:
    """Return the run folder: ``run-dir`` if set, else a new folder under ``out-dir``.

    Never reuses an existing folder: a clash gets a numeric suffix.
    """
    if cfg.run_dir:
        return Path(cfg.run_dir)
    base = Path(cfg.out_dir) / (cfg.run_name or default_run_id(cfg))
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def progress_line(row: Mapping[str, Any], total_rounds: int) -> str:
    """One plain progress line per finished round."""
    parts = [f"round {row['round']}/{total_rounds}"]
    for key in ("train_loss", "evaluate_loss", "evaluate_accuracy", "server_loss",
                "server_accuracy", "server_fid", "server_inception_score", "epsilon_max"):
        value = row.get(key)
        if isinstance(value, (int, float)) and value == value:
            parts.append(f"{key} {value:.4g}")
    if row["round"]:
        parts.append(f"replies {row.get('train_replies', 0)} ok/"
                     f"{row.get('train_failures', 0)} failed")
        parts.append(f"{row.get('seconds', 0):.1f}s")
    return "  ".join(parts)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run ``num-server-rounds`` rounds of the configured strategy and record them."""
    cfg = RunConfig.from_mapping(dict(context.run_config))
    run_dir = resolve_run_dir(cfg)
    settings = {**cfg.to_run_config(), "run-dir": str(run_dir)}
    task = task_registry.get(cfg.task)(settings)
    writer = ResultsWriter(run_dir, task.client_metrics, task.server_metrics)
    run_id = run_dir.name
    writer.write_config(
        {
            "run_id": run_id,
            "settings": settings,
            "versions": versions(),
            "started_at": now(),
            "finished_at": None,
            "status": "running",
            # Values a task derives from the flags (e.g. the noise --target-epsilon implies).
            "resolved": dict(getattr(task, "resolved", {})),
        }
    )
    recorder = RunRecorder(
        writer, run_id, on_round=lambda row: print(progress_line(row, cfg.num_server_rounds),
                                                   flush=True)
    )
    strategy = RecordingStrategy(strategy_registry.build(settings), recorder)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        metrics = task.central_evaluate(server_round, arrays)
        writer.save_state_dict(arrays.to_torch_state_dict())
        recorder.end_round(server_round, metrics)
        return MetricRecord({k: float(v) for k, v in metrics.items()})

    started = time.perf_counter()
    status = "failed"
    try:
        result = strategy.start(
            grid=grid,
            initial_arrays=task.initial_arrays(),
            num_rounds=cfg.num_server_rounds,
            train_config=ConfigRecord(),
            evaluate_config=ConfigRecord(),
            evaluate_fn=evaluate_fn,
        )
        writer.write_json("summary.json", task.summary(result.arrays))
        status = "finished"
    except BaseException:
        status = "interrupted" if _interrupted() else "failed"
        raise
    finally:
        writer.update_config(
            status=status, finished_at=now(), wall_seconds=round(time.perf_counter() - started, 3)
        )
        writer.close()
    LOG.info("results written to %s", run_dir)


def _interrupted() -> bool:
    import sys

    return isinstance(sys.exc_info()[1], (KeyboardInterrupt, SystemExit))
