"""``python -m fl_sim`` / ``./run.sh``: flags -> RunConfig -> simulation -> summary.

Bad input fails here, before Ray starts, with one line naming the flag and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fl_sim.config import (
    OPTIONS, TASK_DEFAULTED, ConfigError, RunConfig, defaults, flag_of,
)
from tasks import registry as task_registry

EXIT_BAD_INPUT = 2
HIDDEN_KEYS = ("run-dir",)  # set by the CLI itself
# Settings a resumed run may change: where and how fast it runs, never what it computes.
RESUME_MAY_CHANGE = ("ray-address", "client-cpus", "client-gpus", "round-timeout", "resume")


def _dest(key: str) -> str:
    return key.replace("-", "_")


def _help_for(key: str, text: str, default: Any) -> str:
    if key in TASK_DEFAULTED:
        per_task = ", ".join(
            f"{name} {task_registry.get(name).defaults[key]}" for name in task_registry.names()
        )
        return f"{text}; task defaults: {per_task}"
    if key in ("task", "strategy"):
        from strategies import registry as strategy_registry

        names = task_registry.names() if key == "task" else strategy_registry.names()
        text = f"{text}, one of: {', '.join(names)}"
    return f"{text} (default: {default!r})"


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per run-config option; an absent flag keeps the pyproject default."""
    table = defaults()
    for option in OPTIONS:
        if option.key in HIDDEN_KEYS:
            continue
        default = table[option.key]
        kwargs: dict[str, Any] = {
            "dest": _dest(option.key), "default": None,
            "help": _help_for(option.key, option.help, default),
        }
        if isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = type(default)
            kwargs["metavar"] = option.key.upper().replace("-", "_")
        parser.add_argument(option.flag, **kwargs)
    parser.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-command per job."""
    parser = argparse.ArgumentParser(
        prog="fl_sim", description="Federated simulation harness (Flower + Ray + Opacus)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="run one federated simulation",
        description="Run one federated simulation; writes results/<run-id>/.",
    )
    add_run_flags(run)
    run.add_argument(
        "--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
        help="run once per value of a run-config key (or flag name), sequentially into one "
             "folder, then compare the runs; repeat for a grid, e.g. --sweep lr=0.005,0.01",
    )
    run.set_defaults(handler=cmd_run)
    report = commands.add_parser(
        "report", help="write RUN_DIR/report/ (figures and index.html) from a run folder",
        description="Plot a run folder (finished or interrupted) into RUN_DIR/report/.",
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, e.g. results/<run-id>")
    report.add_argument("--out", default=None, help="report folder (default: RUN_DIR/report)")
    report.set_defaults(handler=cmd_report)
    compare = commands.add_parser(
        "compare", help="overlay several runs and plot final utility against final epsilon",
        description="Compare run folders: metric and epsilon overlays, the trade-off plot.",
    )
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders")
    compare.add_argument("--metric", default=None,
                         help="rounds.csv column to compare (default: the main metric, e.g. "
                              "server_accuracy, else server_fid, server_loss, ...)")
    compare.add_argument("--out", default=None,
                         help="output folder (default: <common parent of the runs>/compare)")
    compare.set_defaults(handler=cmd_compare)
    deploy = commands.add_parser(
        "deploy", help="run on Flower's Deployment Engine (SuperLink + SuperNodes on loopback)",
        description="Start a SuperLink and --clients SuperNodes on 127.0.0.1 (insecure, local "
        "use), `flwr run` the app, wait, stop them all; writes results/<run-id>/.",
    )
    add_run_flags(deploy)
    deploy.add_argument("--deploy-timeout", type=float, default=3600.0,
                        help="seconds to wait for the run to finish (default: 3600)")
    deploy.set_defaults(handler=cmd_deploy)
    # --- membership-inference audit (issue 8) ---
    audit = commands.add_parser(
        "audit", help="membership-inference audit of a dcgan run: ROC AUC, TPR at 1%% FPR, "
        "empirical epsilon lower bound vs the accounted epsilon",
        description="Attack the run's models with training images (members) vs held-out "
        "images (non-members); writes RUN_DIR/audit.json and RUN_DIR/report/audit_roc.png.",
    )
    audit.add_argument("run_dir", metavar="RUN_DIR", help="a dcgan run folder")
    audit.add_argument("--round", type=int, default=None, dest="audit_round",
                       help="round whose models to audit (default: the last kept round)")
    audit.add_argument("--client", type=int, default=None,
                       help="members are this client's training images (default: all clients')")
    audit.add_argument("--members", type=int, default=1000,
                       help="members and non-members each, at most what exists (default: 1000)")
    audit.add_argument("--synthetic", type=int, default=10000,
                       help="samples drawn for the distance attack (default: 10000)")
    audit.add_argument("--synthetic-file", default=None, metavar="PATH.npz",
                       help="use the images of an `fl_sim sample` file instead of drawing them")
    audit.add_argument("--seed", type=int, default=0, help="subsets, halves and samples (default: 0)")
    audit.set_defaults(handler=cmd_audit)
    # --- end membership-inference audit ---
    # --- release (issue 8: fl_sim sample) ---
    sample = commands.add_parser(
        "sample", help="release synthetic data from a dcgan run's generator (npz or PNG folder)",
        description="Write N images of a run's generator (last round or --round K) with a "
        "metadata JSON: run id, round, epsilon at delta, seed. Same arguments, same bytes.",
    )
    sample.add_argument("run_dir", metavar="RUN_DIR", help="a dcgan run folder")
    sample.add_argument("--n", type=int, default=10_000, help="number of images (default: 10000)")
    sample.add_argument("--out", default=None,
                        help="npz file, or folder for png-folder (default: RUN_DIR/synthetic.npz "
                             "or RUN_DIR/synthetic/)")
    sample.add_argument("--round", type=int, default=None, dest="round",
                        help="round whose generator to use (default: the last kept round)")
    sample.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    sample.add_argument("--format", default="npz", dest="fmt",
                        help="npz (float32 images in [0, 1], int64 labels) or png-folder "
                             "(one sub-folder per class) (default: npz)")
    sample.add_argument("--force", action="store_true",
                        help="replace an existing --out (a folder only if it is a release)")
    sample.set_defaults(handler=cmd_sample)
    return parser


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """The run-config keys the user set on the command line."""
    found = {}
    for option in OPTIONS:
        value = getattr(args, _dest(option.key), None)
        if value is not None:
            found[option.key] = value
    return found


def claim_run_dir(cfg: RunConfig) -> RunConfig:
    """Create the run folder now, so clashes and unwritable paths fail before Ray starts.

    Raises
    ------
    ConfigError
        If ``--out`` cannot be written or ``--run-name`` already exists there.
    """
    from dataclasses import replace

    from fl_sim.server_app import resolve_run_dir

    out = Path(cfg.out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError("out-dir", f"cannot create {out}: {error.strerror}") from None
    if not os.access(out, os.W_OK):
        raise ConfigError("out-dir", f"{out} is not writable")
    if cfg.run_name and (out / cfg.run_name).exists():
        raise ConfigError(
            "run-name", f"{out / cfg.run_name} already exists; choose another name or omit it"
        )
    run_dir = resolve_run_dir(cfg)
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except OSError as error:
        raise ConfigError("out-dir", f"cannot create {run_dir}: {error.strerror}") from None
    return replace(cfg, run_dir=str(run_dir))


def resume_config(overrides: dict[str, Any]) -> RunConfig:
    """The stored settings of the run in ``--resume RUN_DIR``, ready to continue it.

    Raises
    ------
    ConfigError
        If RUN_DIR holds no run with a checkpoint, the run already finished, or a flag
        other than ``RESUME_MAY_CHANGE`` is given (a resumed run computes the same thing).
    """
    from fl_sim.checkpoint import CHECKPOINT, load

    run_dir = Path(overrides["resume"])
    config_path, checkpoint_path = run_dir / "config.json", run_dir / CHECKPOINT
    if not config_path.exists():
        raise ConfigError("resume", f"{run_dir} is not a run folder (no config.json)")
    if not checkpoint_path.exists():
        raise ConfigError(
            "resume", f"{run_dir} has no {CHECKPOINT}; only runs with --checkpoint-every resume"
        )
    changed = sorted(set(overrides) - set(RESUME_MAY_CHANGE))
    if changed:
        raise ConfigError(
            "resume", f"cannot change {', '.join(map(flag_of, changed))} of a resumed run; "
            f"allowed: {', '.join(flag_of(k) for k in RESUME_MAY_CHANGE if k != 'resume')}"
        )
    settings = json.loads(config_path.read_text())["settings"]
    settings = {k: v for k, v in settings.items() if k in defaults()}
    settings.update(overrides, **{"resume": str(run_dir), "run-dir": str(run_dir)})
    cfg = RunConfig.from_mapping(settings)
    done = load(run_dir).server_round
    if done >= cfg.num_server_rounds:
        raise ConfigError(
            "resume", f"{run_dir} already finished its {cfg.num_server_rounds} rounds"
        )
    return cfg


def fail(message: str) -> int:
    """Print one error line and return the bad-input exit code."""
    print(f"fl_sim: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def cmd_run(args: argparse.Namespace) -> int:
    """Validate, claim the run folder, simulate, print the summary and write the report."""
    if args.sweep:
        from fl_sim.sweep import run_sweep

        return run_sweep(args)
    try:
        overrides = overrides_from(args)
        if overrides.get("resume"):
            cfg = resume_config(overrides)
        else:
            cfg = claim_run_dir(RunConfig.from_mapping(overrides))
    except ConfigError as error:
        return fail(str(error))
    _quiet_libraries(args.verbose)
    return simulate(cfg, args.verbose)


def simulate(cfg: RunConfig, verbose: bool = False) -> int:
    """Run a validated config whose folder is claimed; report even an interrupted run.

    Returns the exit code: 0, 1 (the run failed) or 130 (interrupted).
    """
    from fl_sim import simulation
    from fl_sim.summary import print_summary

    run_dir = Path(cfg.run_dir)
    try:
        simulation.run(cfg, verbose=verbose)
    except KeyboardInterrupt:
        _mark(run_dir, "interrupted")
        print(f"interrupted; finished rounds are in {cfg.run_dir}", file=sys.stderr)
        _report_quietly(run_dir)
        return 130
    except Exception as error:  # the ServerApp has recorded what it could
        _mark(run_dir, "failed")
        print(f"fl_sim: run failed: {error}", file=sys.stderr)
        _report_quietly(run_dir)
        return 1
    if not cfg.quiet:
        print_summary(run_dir)
    _report_quietly(run_dir)
    return 0


def _report_quietly(run_dir: Path) -> Path | None:
    """Write the run's report; a plotting problem never fails a finished run."""
    from fl_sim.report import make_report

    try:
        index = make_report(run_dir)
    except Exception as error:  # noqa: BLE001 - the results are safe; say why, go on
        print(f"fl_sim: report failed ({error}); retry with: python -m fl_sim report {run_dir}",
              file=sys.stderr)
        return None
    print(f"report: {index}", flush=True)
    return index


def cmd_report(args: argparse.Namespace) -> int:
    """``fl_sim report RUN_DIR``."""
    from fl_sim.report import make_report
    from fl_sim.report_data import NotARunFolder

    try:
        index = make_report(Path(args.run_dir), args.out)
    except NotARunFolder as error:
        return fail(f"RUN_DIR: {error}")
    print(f"report: {index}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``fl_sim compare RUN_DIR...``."""
    from fl_sim.compare import CompareError, compare
    from fl_sim.report_data import NotARunFolder

    try:
        index = compare([Path(p) for p in args.run_dirs], args.out, args.metric)
    except NotARunFolder as error:
        return fail(f"RUN_DIR: {error}")
    except CompareError as error:
        return fail(str(error))
    print(f"comparison: {index}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    """Like ``run``, on local Deployment Engine processes (``fl_sim.deploy``)."""
    try:
        overrides = overrides_from(args)
        if overrides.get("resume") or overrides.get("ray-address"):
            raise ConfigError(
                "resume" if overrides.get("resume") else "ray-address",
                "is for `run` (Ray simulation) only, not for `deploy`",
            )
        cfg = claim_run_dir(RunConfig.from_mapping(overrides))
    except ConfigError as error:
        return fail(str(error))
    from fl_sim import deploy
    from fl_sim.summary import print_summary

    try:
        status = deploy.run(cfg, timeout=args.deploy_timeout)
    except KeyboardInterrupt:
        _mark(Path(cfg.run_dir), "interrupted")
        print(f"interrupted; every process stopped; finished rounds are in {cfg.run_dir}",
              file=sys.stderr)
        return 130
    except deploy.DeployError as error:
        _mark(Path(cfg.run_dir), "failed")
        print(f"fl_sim: deployment failed: {error}", file=sys.stderr)
        return 1
    if status != "finished:completed":
        _mark(Path(cfg.run_dir), "failed")
        print(f"fl_sim: run ended {status}; see {cfg.run_dir}/deploy/", file=sys.stderr)
        return 1
    print_summary(Path(cfg.run_dir))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """``fl_sim audit RUN_DIR`` (:mod:`fl_sim.audit`); bad arguments exit 2."""
    from fl_sim.audit import AuditError, run_audit
    from fl_sim.audit_report import print_audit
    from fl_sim.run_folder import RunFolderError

    try:
        record = run_audit(Path(args.run_dir), args.audit_round, args.client, args.members,
                           args.synthetic, args.synthetic_file, args.seed)
    except RunFolderError as error:
        return fail(f"RUN_DIR: {error}")
    except AuditError as error:
        return fail(str(error))
    print_audit(record)
    print(f"audit: {Path(args.run_dir) / 'audit.json'}")
    _report_quietly(Path(args.run_dir))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """``fl_sim sample RUN_DIR``: arguments are checked before any image is generated."""
    from fl_sim.export import ExportError, plan_release, summary_line, write_release

    try:
        plan, task, arrays = plan_release(args.run_dir, args.n, args.out, args.round,
                                          args.seed, args.fmt, args.force)
    except ExportError as error:
        return fail(str(error))
    meta = write_release(plan, task, arrays)
    print(summary_line(meta, plan.out, plan.metadata_path))
    return 0


def _mark(run_dir: Path, status: str) -> None:
    """Record an ending the ServerApp could not record itself (config.json)."""
    from fl_sim.results import write_json_atomic

    path = run_dir / "config.json"
    if path.exists():
        config = json.loads(path.read_text())
        if config.get("status") in (None, "running"):
            config["status"] = status
            write_json_atomic(path, config)


def _quiet_libraries(verbose: bool) -> None:
    import logging

    if not verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m fl_sim``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handler(args)
