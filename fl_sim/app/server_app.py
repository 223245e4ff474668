"""Flower ServerApp: composes task, strategy and results writer for one run.

The same app runs under ``python -m fl_sim run`` (in-process simulation), ``flwr run``
and the Deployment Engine; everything it needs comes from ``context.run_config``.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.exception import PrivacyBudgetExhausted
from flwr.serverapp.strategy import Strategy

from fl_core.cache import Cache, cache_dir
from fl_core.flower import InMemoryGrid
from fl_sim.app.client_state import ClientStates
from fl_sim.app.frozen import train_config
from fl_sim.options import RunConfig
from fl_sim.record import logs
from fl_sim.record.phases import PhaseClock, process_started_unix
from fl_sim.record.privacy import PrivacyLog
from fl_sim.record.progress import RoundProgress, choose_mode
from fl_sim.record.recorder import PARTITION_ID, RunRecorder
from fl_sim.record.results import ResultsWriter
from fl_sim.record.tensorboard import TensorBoardLog
from fl_sim.run import checkpoint
from fl_sim.run.lifecycle import now, resolve_run_dir, versions
from strategies import registry as strategy_registry
from strategies.recording import RecordingStrategy
from strategies.server_update import ServerUpdate
from tasks import registry as task_registry
from tasks.base import Workspace

LOG = logging.getLogger("fl_sim")

app = ServerApp()


def wall_clock_timeout(grid: Grid, round_timeout: float) -> float | None:
    """How long the server waits, by the wall clock, for a phase's replies.

    On the Deployment Engine every client runs on its own node, so a reply later than
    ``--round-timeout`` by the wall clock is late. In a simulation, clients queue for a
    few Ray actors and the first round starts them, so the wall clock says nothing of a
    client's lateness: the server waits for every reply and judges each by its own time
    (:meth:`RunRecorder.accepts`), which it does in both engines.
    """
    return None if isinstance(grid, InMemoryGrid) else round_timeout


def _say(quiet: bool):
    """Progress lines of phases before round 1 (the public prior), unless ``--quiet``."""
    def say(line: str) -> None:
        if not quiet:
            print(line, flush=True)

    return say


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run ``num-server-rounds`` rounds of the configured strategy and record them."""
    server_started = time.time()
    cfg = RunConfig.from_mapping(dict(context.run_config))
    run_dir = Path(cfg.run.resume) if cfg.run.resume else resolve_run_dir(cfg)
    logs.configure()  # idempotent; under `flwr run` no CLI has set it up
    run_log = logs.attach_run_log(run_dir)
    rounds = cfg.federation.num_server_rounds
    progress = RoundProgress(rounds, choose_mode(cfg.run.quiet))
    clock = PhaseClock(progress.mode, busy=lambda: progress.active)
    settings = {**cfg.to_run_config(), "run-dir": str(run_dir)}
    say = _say(cfg.run.quiet)
    cache = Cache(cache_dir(cfg.cache.cache_dir), say) if cfg.cache.cache else None
    task = task_registry.get(cfg.task)(
        cfg, Workspace(run_dir, say, resuming=bool(cfg.run.resume), cache=cache))
    artifacts = task.artifacts(run_dir) if hasattr(task, "artifacts") else None
    resumed = checkpoint.load(run_dir) if cfg.run.resume else None
    if resumed:  # before the CSVs are opened for appending
        for name in ("clients.csv", "rounds.csv"):
            checkpoint.truncate_csv(run_dir / name, resumed.server_round)
    writer = ResultsWriter(run_dir, task.client_metrics, task.server_metrics,
                           evaluate_metrics=getattr(task, "evaluate_metrics", None),
                           sample_dp=bool(getattr(task, "dp", False)),
                           client_dp=cfg.strategy == "dp-fedavg")
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
    board = TensorBoardLog(run_dir) if cfg.run.tensorboard else None

    def on_round(row: dict) -> None:
        progress.on_round(row)
        if board is not None:
            board.add_round(row)

    recorder = RunRecorder(writer, run_id, on_round=on_round,
                           min_replies=cfg.quorum.min_replies,
                           deadline=cfg.run.round_timeout, delta=cfg.federation.delta)
    base = strategy_registry.build_for_run(cfg)
    privacy = PrivacyLog.attach(writer, run_id, base)  # None unless client-level DP
    checkpointer = checkpoint.Checkpointer(
        run_dir, cfg.run.checkpoint_every, rounds, {"recorder": recorder}
    )
    if hasattr(base, "state_dict") and hasattr(base, "load_state_dict"):
        checkpointer.register("strategy", base)  # e.g. DP-FedAvg's accountant
    inner: Strategy = base
    if getattr(task, "updates_on_server", False):  # e.g. the DCGAN's server-side G steps
        inner = ServerUpdate(inner, task.server_update)
        checkpointer.register("server-update", task.server_update_state)
    if cfg.run.checkpoint_every:  # clients' context.state travels with the checkpoint
        inner = ClientStates(inner, PARTITION_ID)
        checkpointer.register("client-states", inner)
    strategy: Strategy = RecordingStrategy(inner, recorder)
    random.seed(cfg.federation.seed)  # Flower's strategies sample nodes with `random`
    offset = 0
    with clock.phase("initial model"):  # the DCGAN's public prior is fitted here
        last = {"round": 0, "arrays": task.initial_arrays()}
    frozen = task.frozen_arrays() if hasattr(task, "frozen_arrays") else None
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
        if server_round == 0:  # the DCGAN's reference classifier is trained here
            with clock.phase("round 0 evaluation"):
                metrics = task.central_evaluate(server_round, arrays)
        else:
            metrics = task.central_evaluate(server_round, arrays)
        if artifacts is not None:
            artifacts.after_round(server_round, arrays)
        writer.save_state_dict(arrays.to_torch_state_dict())
        row = recorder.end_round(server_round, metrics, client_level_epsilon=(
            privacy.epsilon(server_round) if privacy and server_round > 0 else None))
        if privacy:
            privacy.end_round(server_round, row)
        last.update(round=server_round, arrays=arrays)
        checkpointer.after_round(server_round, arrays)
        return MetricRecord({k: float(v) for k, v in metrics.items()})

    started = time.perf_counter()
    status = "failed"
    try:
        progress.start()
        with clock.phase("rounds", shown=False):  # they have their own display
            strategy.start(
                grid=grid,
                initial_arrays=last["arrays"],
                num_rounds=rounds - offset,
                timeout=wall_clock_timeout(grid, cfg.run.round_timeout),
                train_config=train_config(frozen),  # frozen arrays travel outside the model
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
            status=status, finished_at=now(), wall_seconds=round(time.perf_counter() - started, 3),
            phases={"start-up": round(server_started - process_started_unix(), 1),
                    **clock.seconds},
            # this process's; the launcher replaces it with the whole command's (phases.py)
            total_seconds=round(time.time() - process_started_unix(), 1),
        )
        writer.close()
        if board is not None:
            board.close()
        logs.detach(run_log)
    LOG.info("results written to %s", run_dir)


def _interrupted() -> bool:
    import sys

    return isinstance(sys.exc_info()[1], (KeyboardInterrupt, SystemExit))
