"""``frontier``: the privacy-utility frontier of the DP-DCGAN in one command.

One run per (target epsilon, number of clients, public prior), each a conditional DP-DCGAN
(so every round reports train-on-synthetic/test-on-real accuracy), into one folder; then
``frontier.csv``, ``frontier.png`` and ``frontier.md`` (:mod:`fl_sim.report.frontier`).
The default grid answers the product's question three ways at once: epsilon 1, 3, 10 and
no DP; federated over 5 clients against 1 client holding all the data (what federation
costs at equal epsilon); with and without the public digits prior (what the private rounds
buy on their own). Any run flag applies to every point (``--rounds 3`` for a quick look);
each TSTR figure is the mean of :data:`TSTR_SEEDS` classifiers unless ``--tstr-seeds`` says.
Points run as a sweep does (:func:`fl_sim.run.sweep.run_configs`), ``--sweep-parallel``
included.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fl_core.options import OptionError, UsageError
from fl_sim.options import RunConfig, defaults

NO_DP = "none"
EPSILONS = "1,3,10,none"
CLIENT_COUNTS = "5,1"
PRIORS = "digits,none"
TSTR_SEEDS = 3
"""Classifiers per TSTR figure unless ``--tstr-seeds`` is given: one classifier's figure sat
4.4 points above the mean of three on the same release (BENCHMARKS.md), more than many of
the settings a frontier compares differ by."""
FIXED = ("target-epsilon", "dp", "clients", "gan-public-prior", "run-name", "sweep-parallel")
"""Keys the grid sets per point (or the command itself uses), so no flag may set them."""


def _values(flag: str, text: str, parse: Any, allowed: str) -> list[Any]:
    items = [item.strip() for item in text.split(",")]
    try:
        values = [parse(item) for item in items if item]
    except ValueError:
        values = []
    if not values or len(values) != len(items) or len(set(values)) != len(values):
        raise UsageError(f"--{flag}", f"expected {allowed}, comma-separated, each once "
                         f"(got {text!r})")
    return values


def _epsilon(item: str) -> float | str:
    if item == NO_DP:
        return NO_DP
    value = float(item)
    if not value > 0:
        raise ValueError(item)
    return value


def _clients(item: str) -> int:
    value = int(item)
    if value < 1:
        raise ValueError(item)
    return value


def _prior(item: str) -> str:
    from tasks.dcgan.options import PRIORS as KNOWN

    if item not in KNOWN:
        raise ValueError(item)
    return item


def point_name(epsilon: float | str, clients: int, prior: str) -> str:
    """``clients-5_prior-digits_eps-10``: what varies, in the folder's name."""
    eps = NO_DP if epsilon == NO_DP else f"{epsilon:g}"
    return f"clients-{clients}_prior-{prior}_eps-{eps}"


def plan(args: argparse.Namespace, overrides: dict[str, Any]) -> tuple[Path, list[RunConfig]]:
    """Validate the grid and every point; choose the frontier folder (not created yet).

    Raises
    ------
    OptionError
        For a bad ``--epsilons``/``--client-counts``/``--priors`` value, a flag the grid
        sets itself, or the first point its options reject.
    """
    epsilons = _values("epsilons", args.epsilons, _epsilon, "positive numbers or none")
    counts = _values("client-counts", args.client_counts, _clients, "positive integers")
    priors = _values("priors", args.priors, _prior, "auto, digits or none")
    for key in FIXED:
        if key in overrides and key not in ("run-name", "sweep-parallel"):
            raise OptionError(key, "is set per point by the frontier's grid; use --epsilons, "
                              "--client-counts or --priors instead")
    if overrides.get("task", "dcgan") != "dcgan":
        raise OptionError("task", f"the frontier is of the DP-DCGAN: dcgan only (got "
                          f"{overrides['task']})")
    base = {**overrides, "task": "dcgan", "conditional": overrides.get("conditional", True),
            "tstr-seeds": overrides.get("tstr-seeds", TSTR_SEEDS)}
    out = Path(base.pop("out-dir", defaults()["out-dir"]))
    name = base.pop("run-name", "") or datetime.now(UTC).strftime("%Y%m%d-%H%M%S-frontier")
    frontier_dir = out / name
    if frontier_dir.exists():
        raise OptionError("run-name", f"{frontier_dir} already exists; choose another name")
    configs = []
    for clients in counts:
        for prior in priors:
            for epsilon in epsilons:
                privacy = ({"dp": False} if epsilon == NO_DP
                           else {"dp": True, "target-epsilon": epsilon})
                point = {**base, **privacy, "clients": clients, "gan-public-prior": prior,
                         "out-dir": str(frontier_dir),
                         "run-name": point_name(epsilon, clients, prior)}
                try:
                    configs.append(RunConfig.from_mapping(point))
                except OptionError as error:
                    raise UsageError("", f"frontier point {point['run-name']}: "
                                     f"{error}") from None
    return frontier_dir, configs


def add_command(commands: Any, add_run_flags: Any) -> None:
    """The ``frontier`` sub-command: its grid flags, and every run flag for all points."""
    parser = commands.add_parser(
        "frontier", help="the DP-DCGAN's privacy-utility frontier: one run per epsilon, "
        "client count and prior, then frontier.csv and a plot of TSTR against epsilon",
        description="Run the conditional DP-DCGAN once per (target epsilon, number of "
        "clients, public prior) into one folder and write frontier.csv, frontier.png and "
        "frontier.md (TSTR and FID at round 0 and at the end, epsilon spent). Every run flag "
        f"applies to all points; each TSTR is the mean of {TSTR_SEEDS} classifiers unless "
        "--tstr-seeds is given.")
    grid = parser.add_argument_group("frontier grid")
    grid.add_argument("--epsilons", default=EPSILONS, metavar="E1,E2,...",
                      help=f"target epsilons per client, '{NO_DP}' for a run without DP "
                      f"(default {EPSILONS})")
    grid.add_argument("--client-counts", default=CLIENT_COUNTS, metavar="N1,N2,...",
                      help="numbers of clients the same data are split over; 1 is one site "
                      f"holding all of it (default {CLIENT_COUNTS})")
    grid.add_argument("--priors", default=PRIORS, metavar="P1,P2,...",
                      help=f"--gan-public-prior values (default {PRIORS})")
    add_run_flags(parser, skip=("target-epsilon", "dp", "clients", "gan-public-prior"))
    parser.set_defaults(handler=cmd_frontier)


def cmd_frontier(args: argparse.Namespace) -> int:
    """Plan every point (a bad one exits 2 before any run), run them, tabulate."""
    from fl_sim.cli import overrides_from
    from fl_sim.report.frontier import write_frontier
    from fl_sim.run.sweep import run_configs

    frontier_dir, configs = plan(args, overrides_from(args))
    print(f"frontier: {len(configs)} runs into {frontier_dir}", flush=True)

    def finish(runs: list[Path]) -> int:
        written = write_frontier(runs, frontier_dir)
        print(f"frontier: {written}", flush=True)
        return 0

    return run_configs(configs, finish, args.verbose)
