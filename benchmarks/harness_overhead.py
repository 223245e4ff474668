"""Harness overhead of a whole run: ``./run.sh``-style CLI run vs a plain in-process loop.

Both do the same work with the same settings: ``rounds`` rounds in which every client
trains from the global model and evaluates it, FedAvg (weighted by examples) makes the
next global model and the server evaluates it. The CLI run adds Flower's simulation
engine, Ray actors, result files and the report; the loop adds nothing. Both are timed
in this one process, one after the other, so their ratio is comparable on a loaded
machine where their absolute times are not.

Usage::

    PYTHONPATH=. python benchmarks/harness_overhead.py --task regression --clients 5
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def in_process(task_name: str, clients: int) -> tuple[float, dict[str, float]]:
    """Wall seconds of the plain FedAvg loop, and its final server metrics."""
    from flwr.app import RecordDict

    from fl_sim.options import RunConfig
    from tasks import registry
    from tasks.base import Partition, fedavg

    started = time.perf_counter()
    config = RunConfig.from_mapping({"task": task_name, "clients": clients})
    task = registry.get(task_name)(config)
    arrays = task.initial_arrays()
    states = [RecordDict() for _ in range(clients)]
    task.central_evaluate(0, arrays)
    for server_round in range(1, config.federation.num_server_rounds + 1):
        results = [task.train(arrays, Partition(i, clients), states[i], server_round)
                   for i in range(clients)]
        arrays = fedavg(results)
        for i in range(clients):
            task.evaluate(arrays, Partition(i, clients))
        metrics = task.central_evaluate(server_round, arrays)
    return time.perf_counter() - started, metrics


def cli(task_name: str, clients: int, out: Path) -> float:
    """Wall seconds of ``python -m fl_sim run`` (what ``./run.sh`` execs), Ray included."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "fl_sim", "run", "--task", task_name, "--clients", str(clients),
         "--out", str(out), "--run-name", "overhead", "--quiet"],
        cwd=REPO, check=True, capture_output=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="regression")
    parser.add_argument("--clients", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        harness = cli(args.task, args.clients, Path(tmp))
        rounds = len((Path(tmp) / "overhead" / "rounds.csv").read_text().splitlines()) - 2
    plain, metrics = in_process(args.task, args.clients)
    print(f"task {args.task}, {args.clients} clients, {rounds} rounds")
    print(f"CLI run (Ray simulation, results, report): {harness:.1f} s")
    print(f"plain in-process FedAvg loop:             {plain:.2f} s "
          f"(final server metrics {metrics})")
    print(f"ratio: {harness / plain:.1f}x; per-round harness overhead: "
          f"{(harness - plain) / rounds:.2f} s")


if __name__ == "__main__":
    main()
