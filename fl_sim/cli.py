"""``python -m fl_sim`` / ``./run.sh`` / ``fl-sim``: flags -> settings -> the job.

Every run flag is generated from the option declarations (:mod:`fl_sim.options`), one
argument group per option group. Bad input fails here, before Ray starts, with one line
naming the flag and exit code 2: every such error is a :class:`fl_core.options.UsageError`,
caught once, in :func:`main`. Building the parser imports neither torch, Opacus nor Ray;
each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fl_core.federation import TASK_DEFAULTED
from fl_core.options import Spec, UsageError, allowed_values
from fl_sim.options import RunConfig, option_groups
from fl_sim.run.frontier import add_command as add_frontier
from tasks import registry as task_registry

EXIT_BAD_INPUT = 2


class Parser(argparse.ArgumentParser):
    """argparse without abbreviations, answering a mistake with one line.

    An abbreviated flag would let ``--he`` mean ``--help`` and a flag added later
    silently change what an old command line means, so none is accepted. argparse's own
    errors (a non-numeric ``--clients``, an unknown flag) print one line and a pointer to
    ``--help`` instead of the whole usage.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.help_hint = f"{self.prog} --help"

    def error(self, message: str) -> None:  # type: ignore[override]
        """Print ``fl_sim: error: <message> (see <prog> --help)`` and exit 2."""
        print(f"fl_sim: error: {message} (see {self.help_hint})", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def _help_for(spec: Spec) -> str:
    if spec.key in TASK_DEFAULTED:
        per_task = ", ".join(f"{name} {task_registry.DEFAULTS[name][spec.key]}"
                             for name in task_registry.names())
        return f"{spec.help}; task defaults: {per_task}"
    text = spec.help
    if spec.key in ("task", "strategy"):
        text = f"{text}, one of: {', '.join(allowed_values(spec) or [])}"
    return f"{text} (default: {spec.default!r})"


RAY_ONLY = ("resume", "ray-address", "sweep-parallel")
"""Run options a Ray simulation takes and the Deployment Engine launcher does not."""


def add_run_flags(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """One flag per declared option, grouped as declared; an absent flag keeps the default.

    ``skip``: keys the command does not take, so that its ``--help`` does not list them.
    """
    for group in option_groups():
        section = parser.add_argument_group(group.title)
        for spec in group.specs():
            if spec.hidden or spec.key in skip:
                continue
            kwargs: dict[str, Any] = {"dest": spec.attribute, "default": None,
                                      "help": _help_for(spec)}
            if spec.kind is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs["type"] = spec.kind
                kwargs["metavar"] = spec.key.upper().replace("-", "_")
            section.add_argument(spec.flag, **kwargs)
    add_log_flags(parser)
    parser.add_argument("--config", metavar="FILE.toml", default=None,
                        help="run-config keys as in [tool.flwr.app.config]; flags win")


def add_log_flags(parser: argparse.ArgumentParser) -> None:
    """``--verbose`` and ``--log-level``: what the terminal shows (run.log keeps all)."""
    from fl_sim.record.logs import LEVELS

    parser.add_argument("--verbose", action="store_true",
                        help="show Flower's and Ray's logs and the library warnings "
                             "hidden by default")
    parser.add_argument("--log-level", choices=LEVELS, default=None,
                        help="terminal log level (default: warning); run.log keeps every level")


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """The run-config keys the user set: ``--config``'s file, then the flags over it."""
    keys: dict[str, Any] = {}
    if getattr(args, "config", None):
        from fl_sim.config_file import read_config_file

        keys.update(read_config_file(args.config))
    keys.update({spec.key: getattr(args, spec.attribute)
                 for group in option_groups() for spec in group.specs()
                 if getattr(args, spec.attribute, None) is not None})
    return keys


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-command per job."""
    parser = Parser(
        prog="fl_sim", description="Federated simulation harness (Flower + Ray + Opacus)."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    parser.commands = commands.choices
    run = commands.add_parser(
        "run", help="run one federated simulation",
        description="Run one federated simulation; writes results/<run-id>/.",
    )
    add_run_flags(run)
    run.add_argument(
        "--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
        help="run once per value of a run-config key (or flag name) into one folder "
             "(--sweep-parallel runs at once), then compare the runs; repeat for a grid, "
             "e.g. --sweep lr=0.005,0.01",
    )
    run.set_defaults(handler=cmd_run)
    add_frontier(commands, add_run_flags)
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
    add_run_flags(deploy, skip=RAY_ONLY)
    deploy.add_argument("--deploy-timeout", type=float, default=3600.0,
                        help="seconds to wait for the run to finish (default: 3600)")
    deploy.set_defaults(handler=cmd_deploy)
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
    audit.add_argument("--seed", type=int, default=0,
                       help="subsets, halves and samples (default: 0)")
    audit.set_defaults(handler=cmd_audit)
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
    for command in (audit, sample, report):
        add_log_flags(command)
    board = commands.add_parser(
        "tensorboard", help="write RUN_DIR/tensorboard/ event files from a run's rounds.csv",
        description="TensorBoard event files of a finished or running run (what --tensorboard "
        "writes as the run goes); view with: tensorboard --logdir RUN_DIR")
    board.add_argument("run_dir", metavar="RUN_DIR", help="a run folder")
    board.set_defaults(handler=cmd_tensorboard)
    stop = commands.add_parser(
        "stop-flwr", help="stop the local SuperLink and SuperExec `flwr run .` leaves running",
        description="Stop the managed local SuperLink of `flwr run .` (Flower's local control "
        "address only) and its process group; other SuperLinks are left alone.")
    stop.set_defaults(handler=cmd_stop_flwr)
    return parser


def fail(message: str) -> int:
    """Print one error line and return the bad-input exit code."""
    print(f"fl_sim: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


# --- commands (each raises UsageError for bad input; main() answers it) ----------------
def cmd_run(args: argparse.Namespace) -> int:
    """Validate, claim the run folder, simulate, print the summary and write the report."""
    from fl_sim.run import lifecycle, simulation

    overrides = overrides_from(args)
    if args.sweep:
        from fl_sim.run.sweep import run_sweep

        return run_sweep(args.sweep, overrides, args.verbose)
    if overrides.get("resume"):
        cfg = lifecycle.resume_config(overrides)
    else:
        cfg = lifecycle.claim_run_dir(RunConfig.from_mapping(overrides))
    simulation.quiet_libraries(args.verbose)
    # The process ends after this run (entry): its Ray ends with it, unwaited.
    return simulation.simulate(cfg, args.verbose, wait_for_ray=False)


def cmd_report(args: argparse.Namespace) -> int:
    """``fl_sim report RUN_DIR``."""
    from fl_sim.report.build import make_report

    print(f"report: {make_report(Path(args.run_dir), args.out)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``fl_sim compare RUN_DIR...``."""
    from fl_sim.report.compare import compare

    print(f"comparison: {compare([Path(p) for p in args.run_dirs], args.out, args.metric)}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    """Like ``run``, on local Deployment Engine processes (``fl_sim.run.deploy``)."""
    from fl_sim.options import OptionError
    from fl_sim.run import lifecycle

    overrides = overrides_from(args)
    for key in RAY_ONLY:  # a --config file may still name them
        if overrides.get(key):
            raise OptionError(key, "is for `run` (Ray simulation) only, not for `deploy` "
                              "(docs/deployment-and-scale.md says why)")
    if not (math.isfinite(args.deploy_timeout) and args.deploy_timeout > 0):
        raise UsageError("--deploy-timeout", f"must be a finite number > 0, got "
                         f"{args.deploy_timeout!r}")
    cfg = lifecycle.claim_run_dir(RunConfig.from_mapping(overrides))
    from fl_sim.record.summary import print_summary
    from fl_sim.run import deploy
    from fl_sim.run.he_keys import provisioned
    from fl_sim.run.interrupts import terminate_as_interrupt
    from fl_sim.run.simulation import report_quietly

    run_dir = Path(cfg.run.run_dir)
    lock = lifecycle.RunLock(run_dir).acquire()
    try:
        # --he: the run's CKKS keys exist while it runs
        with terminate_as_interrupt() as codes, provisioned(cfg) as keyed:
            status = deploy.run(keyed, timeout=args.deploy_timeout)
    except KeyboardInterrupt:
        lifecycle.mark(run_dir, "interrupted")
        print(f"interrupted; every process stopped; finished rounds are in {run_dir}",
              file=sys.stderr)
        code = codes["exit"]
    except deploy.DeployError as error:
        lifecycle.mark(run_dir, "failed")
        print(f"fl_sim: deployment failed: {error}", file=sys.stderr)
        code = 1
    else:
        code = 0 if status == "finished:completed" else 1
        if code:
            lifecycle.mark(run_dir, "failed")
            print(f"fl_sim: run ended {status}; see {run_dir}/deploy/", file=sys.stderr)
        else:
            print_summary(run_dir)
    finally:
        lock.release()
    from fl_sim.record.phases import finish_timeline

    finish_timeline(run_dir)
    report_quietly(run_dir)  # every run ends with its report, deployed ones too
    return code


def cmd_audit(args: argparse.Namespace) -> int:
    """``fl_sim audit RUN_DIR`` (:mod:`fl_sim.release.audit`)."""
    from fl_sim.release.audit import run_audit
    from fl_sim.release.audit_report import print_audit
    from fl_sim.run.simulation import report_quietly

    with _phase("audit: membership-inference attacks on the run's models"):
        record = run_audit(Path(args.run_dir), args.audit_round, args.client, args.members,
                           args.synthetic, args.synthetic_file, args.seed)
    print_audit(record)
    print(f"audit: {Path(args.run_dir) / 'audit.json'}")
    report_quietly(Path(args.run_dir))
    return 0


def _phase(name: str):
    """A spinner with elapsed time on a terminal, start and end lines elsewhere."""
    from fl_sim.record.phases import PhaseClock
    from fl_sim.record.progress import choose_mode

    return PhaseClock(choose_mode(False)).phase(name)


def cmd_sample(args: argparse.Namespace) -> int:
    """``fl_sim sample RUN_DIR``: arguments are checked before any image is generated."""
    from fl_sim.release.export import plan_release, summary_line, write_release

    plan, task, arrays = plan_release(args.run_dir, args.n, args.out, args.round,
                                      args.seed, args.fmt, args.force)
    with _phase(f"sample: generating {args.n} images"):
        meta = write_release(plan, task, arrays)
    print(summary_line(meta, plan.out, plan.metadata_path))
    return 0


def cmd_tensorboard(args: argparse.Namespace) -> int:
    """``fl_sim tensorboard RUN_DIR`` (:mod:`fl_sim.record.tensorboard`)."""
    from fl_sim.record.tensorboard import export

    print(f"tensorboard: {export(args.run_dir)}")
    return 0


def cmd_stop_flwr(args: argparse.Namespace) -> int:
    """``fl_sim stop-flwr`` (:mod:`fl_sim.run.stop_flwr`)."""
    from fl_sim.run.stop_flwr import stop

    stopped = stop()
    print(f"stopped local SuperLink process {', '.join(map(str, stopped))} and its group"
          if stopped else "no local SuperLink of `flwr run` is running")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m fl_sim`` and of the ``fl-sim`` console script."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in parser.commands:  # argparse reports a command's strays at the top
        parser.help_hint = f"fl_sim {argv[0]} --help"
    args = parser.parse_args(argv)
    from fl_sim.record import logs

    if getattr(args, "log_level", None):
        os.environ[logs.LEVEL_ENV] = args.log_level  # the clients log at the same level
    logs.configure(getattr(args, "log_level", None), getattr(args, "verbose", False))
    try:
        return args.handler(args)
    except UsageError as error:
        return fail(str(error))


def entry() -> None:
    """``python -m fl_sim`` and the ``fl-sim`` script: :func:`main`, then end the process.

    Flower's simulation leaves its ServerApp thread (not a daemon) waiting for replies when
    the simulation engine stops early (Ray failed to start, a crash): a normal interpreter
    exit would wait for it for ever. Every result is already written and fsynced when
    :func:`main` returns, so the process ends without joining leftover threads.
    """
    import logging

    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
