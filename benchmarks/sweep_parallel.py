"""A sweep one point after another against the default ``--sweep-parallel``: wall times.

Runs the same grid twice, one sweep after the other, as ``python -m fl_sim run --sweep ...``
processes: first with ``--sweep-parallel 1`` (every point in this one process, one after
another), then with the default (as many points at once as the CPUs hold, each in its own
process and Ray). Prints the load average before each, both wall times, their ratio, and
the largest relative difference between the two sweeps' final server losses (replies that
arrive in another order are summed in another order: float32's last bits).

Usage::

    PYTHONPATH=. .venv/bin/python benchmarks/sweep_parallel.py --clients 5 \\
        --sweep lr=0.005,0.01,0.015,0.02
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sweep(out: Path, name: str, task: str, clients: int, grid: str,
          extra: list[str]) -> float:
    """Wall seconds of one ``--sweep`` process (its output goes to ``out/name.log``)."""
    print(f"{name}: load average before {os.getloadavg()[0]:.2f}", flush=True)
    started = time.perf_counter()
    with (out / f"{name}.log").open("w") as log:
        subprocess.run([sys.executable, "-m", "fl_sim", "run", "--task", task, "--clients",
                        str(clients), "--out", str(out), "--run-name", name, "--sweep", grid,
                        *extra], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - started


def final_losses(folder: Path) -> dict[str, float]:
    """Each point's last ``server_loss`` (NaN where the run diverged: an empty cell)."""
    import csv

    losses = {}
    for rounds in sorted(folder.glob("*/rounds.csv")):
        rows = list(csv.DictReader(rounds.open()))
        losses[rounds.parent.name] = float(rows[-1]["server_loss"] or "nan")
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="regression")
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--sweep", default="lr=0.005,0.01,0.015,0.02",
                        help="the grid (from lr 0.03 on, 10 rounds of the regression diverge)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="write the sweeps here and keep them (default: a temporary folder)")
    args, extra = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        one = sweep(out, "sequential", args.task, args.clients, args.sweep,
                    [*extra, "--sweep-parallel", "1"])
        print(f"sequential (--sweep-parallel 1): {one:.1f} s", flush=True)
        many = sweep(out, "parallel", args.task, args.clients, args.sweep, extra)
        head = (out / "parallel.log").read_text().splitlines()[0]
        print(f"parallel (default; {head}): {many:.1f} s")
        print(f"ratio parallel / sequential: {many / one:.2f}")
        one_loss, many_loss = final_losses(out / "sequential"), final_losses(out / "parallel")
        assert one_loss.keys() == many_loss.keys()
        gaps = [abs(many_loss[k] - v) / abs(v) for k, v in one_loss.items()]
        gap = max((g for g in gaps if math.isfinite(g)), default=0.0)  # NaN: diverged
        print(f"final server_loss per point: {many_loss}; largest relative difference "
              f"from the sequential sweep: {gap:.1e}")
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
