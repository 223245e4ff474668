"""Flower ServerApp: composes task, strategy and results writer for one run.

The same app runs under ``python -m fl_sim run`` (in-process simulation), ``flwr run``
and the Deployment Engine; everything it needs comes from ``context.run_config``.
"""

from __future__ import annotations

import logging
import platform
import random
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.exception import PrivacyBudgetExhausted
from flwr.serverapp.strategy import Strategy

from fl_sim import checkpoint
from fl_sim.client_state import ClientStates
from fl_sim.config import RunConfig
from fl_sim.privacy import PrivacyLog
from fl_sim.progress import RoundProgress, choose_mode
from fl_sim.recorder import PARTITION_ID, RunRecorder
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


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run ``num-server-rounds`` rounds of the configured strategy and record them."""
    cfg = RunConfig.from_mapping(dict(context.run_config))
    run_dir = Path(cfg.resume) if cfg.resume else resolve_run_dir(cfg)
    settings = {**cfg.to_run_config(), "run-dir": str(run_dir)}
    task = task_registry.get(cfg.task)(settings)
    resumed = checkpoint.load(run_dir) if cfg.resume else None
    if resumed:  # before the CSVs are opened for appending
        for name in ("clients.csv", "rounds.csv"):
            checkpoint.truncate_csv(run_dir / name, resumed.server_round)
    writer = ResultsWriter(run_dir, task.client_metrics, task.server_metrics)
    run_id = run_dir.name
    if resumed:
        writer.resume_config(resumed_at=now(), resumed_from_round=resumed.server_round)
    else:
        writer.write_config(
            {
                "run_id": run_id,
                "settings": settings,
                "versions": versions(),
                "started_at": now(),
                "finished_at": None,
                "status": "running",
            }
        )
    progress = RoundProgress(cfg.num_server_rounds, choose_mode(cfg.quiet))
    recorder = RunRecorder(writer, run_id, on_round=progress.on_round,
                           min_replies=cfg.min_replies)
    base = strategy_registry.build_for_run(settings)
    privacy = PrivacyLog.attach(writer, run_id, base)  # None unless client-level DP
    checkpointer = checkpoint.Checkpointer(
        run_dir, cfg.checkpoint_every, cfg.num_server_rounds, {"recorder": recorder}
    )
    if hasattr(base, "state_dict") and hasattr(base, "load_state_dict"):
        checkpointer.register("strategy", base)  # e.g. DP-FedAvg's accountant
    inner: Strategy = base
    if cfg.checkpoint_every:  # clients' context.state travels with the checkpoint
        inner = ClientStates(inner, PARTITION_ID)
        checkpointer.register("client-states", inner)
    strategy: Strategy = RecordingStrategy(inner, recorder)
    random.seed(cfg.seed)  # Flower's strategies sample nodes with `random`
    offset = 0
    last = {"round": 0, "arrays": task.initial_arrays()}
    if not resumed:
        # Values a task derives from the flags (e.g. the noise --target-epsilon implies);
        # after initial_arrays, which may prepare what they depend on (disguise's data).
        writer.update_config(resolved=dict(getattr(task, "resolved", {})))
    if resumed:
        checkpointer.restore(resumed)
        offset = resumed.server_round
        last.update(round=offset, arrays=resumed.array_record())
        strategy = checkpoint.RoundOffset(strategy, offset)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        server_round += offset
        if resumed and server_round == offset:
            return None  # the checkpointed round's row is already written
        metrics = task.central_evaluate(server_round, arrays)
        writer.save_state_dict(arrays.to_torch_state_dict())
        row = recorder.end_round(server_round, metrics)
        if privacy:
            privacy.end_round(server_round, row)
        last.update(round=server_round, arrays=arrays)
        checkpointer.after_round(server_round, arrays)
        return MetricRecord({k: float(v) for k, v in metrics.items()})

    started = time.perf_counter()
    status = "failed"
    try:
        progress.start()
        strategy.start(
            grid=grid,
            initial_arrays=last["arrays"],
            num_rounds=cfg.num_server_rounds - offset,
            timeout=cfg.round_timeout,
            train_config=ConfigRecord(),
            evaluate_config=ConfigRecord(),
            evaluate_fn=evaluate_fn,
        )
        status = "finished"
    except PrivacyBudgetExhausted as stop:  # model.pt is already the last allowed round's
        print(f"stopped: {stop}", flush=True)
        recorder.end_round(last["round"] + 1, None, status="budget-exhausted")
        if privacy:
            privacy.budget_stop(str(stop))
        status = "finished"
    except BaseException:
        status = "interrupted" if _interrupted() else "failed"
        raise
    finally:
        progress.close()
        if status == "finished":
            # The last evaluated global model (Flower's result.arrays stays empty when no
            # round of this process aggregated: all skipped, budget spent, nothing left).
            writer.write_json("summary.json", task.summary(last["arrays"]))
        writer.update_config(
            status=status, finished_at=now(), wall_seconds=round(time.perf_counter() - started, 3)
        )
        writer.close()
    LOG.info("results written to %s", run_dir)


def _interrupted() -> bool:
    import sys

    return isinstance(sys.exc_info()[1], (KeyboardInterrupt, SystemExit))
