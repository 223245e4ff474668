"""``run --sweep KEY=V1,V2,...``: one run per grid point, into one folder, then compare.

Every point is validated before the first run starts (a bad value anywhere exits 2
before Ray starts); runs go one after another in this process (``--sweep-parallel 1``) or
several at once, each in its own process (:mod:`fl_sim.run.parallel`), each with its own
report; the comparison goes to ``<sweep folder>/compare/`` once every point has ended.
Generic over run-config keys: ``--sweep noise-multiplier=0.5,1,2`` works wherever that
key exists.
"""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fl_core.options import OptionError, UsageError
from fl_sim.options import RunConfig, defaults, option_groups

NOT_SWEPT = {"run-dir", "run-name", "out-dir", "ray-address", "quiet", "sweep-parallel",
             "cache", "cache-dir"}


class SweepError(UsageError):
    """A ``--sweep`` value is malformed or names an unknown key."""

    def __init__(self, message: str) -> None:
        super().__init__("", message)


def sweep_key(name: str) -> str:
    """The run-config key of ``name``: a key (``lr``) or a flag without dashes (``rounds``)."""
    table = defaults()
    if name in table:
        key = name
    else:
        by_flag = {spec.flag.lstrip("-"): spec.key
                   for group in option_groups() for spec in group.specs()}
        key = by_flag.get(name.lstrip("-"), "")
    if not key:
        raise SweepError(f"--sweep: unknown key {name!r}; known: {', '.join(sorted(table))}")
    if key in NOT_SWEPT:
        raise SweepError(f"--sweep: {key} cannot be swept; allowed: any other run-config key")
    return key


def parse_sweep(specs: list[str]) -> list[tuple[str, list[str]]]:
    """``["lr=0.005,0.01"]`` -> ``[("lr", ["0.005", "0.01"])]``.

    Raises
    ------
    SweepError
        For a spec without ``=``, an empty value, a repeated key or an unknown key.
    """
    axes: list[tuple[str, list[str]]] = []
    for spec in specs:
        name, sep, values = spec.partition("=")
        items = [v.strip() for v in values.split(",")]
        if not sep or not name.strip() or not all(items):
            raise SweepError(f"--sweep: expected KEY=V1,V2,... (e.g. lr=0.005,0.01), got {spec!r}")
        key = sweep_key(name.strip())
        if key in (k for k, _ in axes):
            raise SweepError(f"--sweep: {key} given twice; list all its values once")
        axes.append((key, list(dict.fromkeys(items))))
    return axes


def point_name(point: dict[str, Any]) -> str:
    """A folder name for a grid point: ``lr-0.005`` or ``lr-0.005_seed-1``."""
    name = "_".join(f"{key}-{value}" for key, value in point.items())
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)


def plan(specs: list[str], overrides: dict[str, Any]) -> tuple[Path, list[RunConfig]]:
    """Validate every grid point and choose the sweep folder (not created yet).

    Parameters
    ----------
    specs : list of str
        The ``--sweep`` values.
    overrides : dict
        The other run-config keys set on the command line.

    Raises
    ------
    SweepError, OptionError
        For the first bad spec or grid point.
    """
    axes = parse_sweep(specs)
    base = dict(overrides)
    clash = [key for key, _ in axes if key in base]
    if clash:
        raise SweepError(f"--sweep: {clash[0]} is also set by its own flag; give it once")
    out = Path(base.pop("out-dir", defaults()["out-dir"]))
    name = base.pop("run-name", "") or (
        datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        + f"-sweep-{'-'.join(key for key, _ in axes)}"
    )
    sweep_dir = out / name
    if sweep_dir.exists():
        raise OptionError("run-name", f"{sweep_dir} already exists; choose another name")
    configs = []
    for values in itertools.product(*(v for _, v in axes)):
        point = dict(zip((k for k, _ in axes), values))
        try:
            cfg = RunConfig.from_mapping({**base, **point, "out-dir": str(sweep_dir),
                                          "run-name": point_name(point)})
        except OptionError as error:
            raise SweepError(f"--sweep {point_name(point)}: {error}") from None
        configs.append(cfg)
    names = [cfg.run.run_name for cfg in configs]
    if len(set(names)) != len(names):
        raise SweepError("--sweep: two values give the same run (repeated values?)")
    resources = configs[0].resources
    if resources.ray_address and resources.sweep_parallel > 1:
        raise OptionError("sweep-parallel", "runs each point on a Ray of its own; points "
                          "joining one cluster (--ray-address) would each size their clients "
                          "to the whole cluster and queue for it: use 1 with --ray-address")
    return sweep_dir, configs


def compare_runs(runs: list[Path], sweep_dir: Path) -> int:
    """Compare the sweep's runs into ``<sweep>/compare/``; 1 if that fails (the runs are safe).

    A point stopped before its ServerApp began (no ``config.json``) has nothing to compare.
    """
    from fl_sim.report.compare import compare

    runs = [run for run in runs if (run / "config.json").exists()]
    try:
        index = compare(runs, sweep_dir / "compare")
    except Exception as error:  # noqa: BLE001 - the runs are safe; say why
        print(f"fl_sim: compare failed ({error}); retry with: python -m fl_sim compare "
              f"{' '.join(map(str, runs))}", file=sys.stderr)
        return 1
    print(f"comparison: {index}", flush=True)
    return 0


def run_sweep(specs: list[str], overrides: dict[str, Any], verbose: bool = False) -> int:
    """Run every grid point, then compare; returns the worst exit code of the runs.

    Raises
    ------
    SweepError, OptionError
        Before the first run, for a bad spec or grid point; later, if a point's folder
        cannot be claimed.
    """
    sweep_dir, configs = plan(specs, overrides)
    return run_configs(configs, lambda runs: compare_runs(runs, sweep_dir), verbose)


def run_configs(configs: list[RunConfig], finish: Callable[[list[Path]], int],
                verbose: bool = False) -> int:
    """Run validated points, then ``finish(run folders)``; the worst exit code of all.

    ``--sweep-parallel`` (:func:`fl_sim.run.parallel.points_at_once`) decides how many
    points run at once; with one, they run one after another in this process, and Ctrl-C
    still finishes with the points that ran. Every point's data are checked before the
    first run starts.
    """
    from fl_sim.run.lifecycle import claim_run_dir
    from fl_sim.run.parallel import points_at_once, run_points

    for cfg in configs:
        cfg.preflight()
    at_once, num_cpus = points_at_once(configs[0], len(configs))
    if at_once > 1:
        each = f", {num_cpus} CPU{'s' if num_cpus != 1 else ''} each" if num_cpus else ""
        print(f"sweep: {len(configs)} runs, {at_once} at a time{each}", flush=True)
        code, started = run_points(configs, at_once, num_cpus, verbose)
        return max(code, finish(started))

    from fl_sim.run.simulation import quiet_libraries, simulate

    quiet_libraries(verbose)
    done: list[Path] = []
    code = 0
    for i, cfg in enumerate(configs, 1):
        cfg = claim_run_dir(cfg)
        print(f"sweep {i}/{len(configs)}: {cfg.run.run_name} -> {cfg.run.run_dir}", flush=True)
        done.append(Path(cfg.run.run_dir))
        code = max(code, simulate(cfg, verbose, also_on_interrupt=lambda: finish(done)))
    return max(code, finish(done))
