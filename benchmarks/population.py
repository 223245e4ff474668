"""Population-scale benchmark: per-round wall time and peak RSS vs population size.

For each population N (10 sampled per round) this runs ``python -m fl_sim run`` in a
child process and reads:

- per-round wall time: the median ``seconds`` of rounds.csv over rounds 2..R (round 1
  also pays for Ray actors starting and importing torch, so it is reported apart);
- peak RSS of the driver process (ServerApp, Flower's simulation engine with its
  per-node contexts, the recorder): ``ru_maxrss`` of the waited-for child. Ray's worker
  processes are not its children; their number is set by ``--client-cpus``, not N;
- the harness overhead ratio: per-round simulation wall time divided by the time the
  same work (10 clients' ``task.train`` + ``task.evaluate`` and the server's
  ``central_evaluate``) takes when called directly in this process;
- the time outside the rounds (process wall minus config.json ``wall_seconds``): imports,
  Ray's start, Flower registering every node, the report and shutdown;
- with ``--registration``: Flower's node registration alone, in this process, with the
  app config parsed once per node (Flower 1.42 alone) and once per run
  (``fl_core.flower.app_config_read_once``), both in one run.

Usage (writes a Markdown table to stdout and JSON next to it with ``--json``)::

    PYTHONPATH=. python benchmarks/population.py --task regression --populations 10 100 1000

Numbers depend on the machine and its load; BENCHMARKS.md says where they came from.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def simulate(task: str, clients: int, per_round: int, rounds: int, out: Path,
             extra: list[str]) -> dict:
    """One CLI run in a child process; its timings and the child's peak RSS."""
    name = f"{task}-{clients}"
    started = time.perf_counter()
    log = out / f"{name}.log"
    with log.open("w") as handle:
        child = subprocess.Popen(
            [sys.executable, "-m", "fl_sim", "run", "--task", task, "--clients", str(clients),
             "--clients-per-round", str(per_round), "--rounds", str(rounds), "--out", str(out),
             "--run-name", name, *extra],
            cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        # wait4 returns this child's own rusage: ru_maxrss is its peak RSS in KiB.
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{log.read_text()[-3000:]}")
    peak_kib = usage.ru_maxrss
    config = json.loads((out / name / "config.json").read_text())
    rounds_csv = pd.read_csv(out / name / "rounds.csv")
    seconds = rounds_csv["seconds"].iloc[1:].astype(float).tolist()
    clients_csv = pd.read_csv(out / name / "clients.csv")
    sampled = clients_csv[clients_csv["phase"] == "train"].groupby("round").size()
    return {
        "task": task, "clients": clients, "per_round": per_round, "rounds": rounds,
        "first_round_s": seconds[0], "round_s": statistics.median(seconds[1:]),
        "process_wall_s": wall, "peak_rss_mib": peak_kib / 1024,
        # everything outside Strategy.start: imports, Ray, the report, shutdown
        "outside_rounds_s": wall - float(config["wall_seconds"]),
        "sampled_per_round": sorted(set(sampled.tolist())),
        "distinct_partitions": int(clients_csv["partition_id"].nunique()),
    }


def in_process_round(task_name: str, clients: int, per_round: int, repeats: int = 5) -> float:
    """Seconds for one round's client and server work called directly (median)."""
    from flwr.app import RecordDict

    from fl_sim.options import RunConfig
    from tasks import registry
    from tasks.base import Partition

    config = RunConfig.from_mapping({"task": task_name, "clients": clients})
    task = registry.get(task_name)(config)
    arrays = task.initial_arrays()
    rng = np.random.default_rng(0)
    times = []
    for server_round in range(1, repeats + 2):
        chosen = rng.choice(clients, size=per_round, replace=False)
        started = time.perf_counter()
        for index in chosen:
            partition = Partition(int(index), clients)
            task.train(arrays, partition, RecordDict(), server_round)
            task.evaluate(arrays, partition)
        task.central_evaluate(server_round, arrays)
        if server_round > 1:  # the first call pays for lazy data loading
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def registration(clients: int) -> dict:
    """Seconds Flower takes to register ``clients`` simulated nodes' contexts, in this process,
    parsing the app config per node (Flower alone) and once (``app_config_read_once``).
    """
    from flwr.server.superlink.fleet.vce import vce_api

    from fl_core import flower
    from fl_sim.options import PROJECT_ROOT, RunConfig

    overrides = RunConfig.from_mapping({"clients": clients}).to_run_config()
    mapping = {node: node for node in range(clients)}
    seconds = {}
    scopes = (("per_node", contextlib.nullcontext), ("once", flower.app_config_read_once))
    for name, scope in scopes:
        started = time.perf_counter()
        with scope():
            vce_api._register_node_info_stores(mapping, flower.new_run(overrides),
                                               app_dir=str(PROJECT_ROOT))
        seconds[name] = time.perf_counter() - started
    return {"clients": clients, "register_per_node_parse_s": seconds["per_node"],
            "register_one_parse_s": seconds["once"],
            "ratio": seconds["once"] / seconds["per_node"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="regression")
    parser.add_argument("--populations", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--registration", action="store_true",
                        help="also time Flower's node registration in-process, with the app "
                             "config parsed per node and once")
    parser.add_argument("extra", nargs="*", help="more `fl_sim run` flags after --")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for clients in sorted(args.populations):
            row = simulate(args.task, clients, args.per_round, args.rounds, Path(out), args.extra)
            row["in_process_round_s"] = in_process_round(args.task, clients, args.per_round)
            row["overhead_ratio"] = row["round_s"] / row["in_process_round_s"]
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print("| task | clients | sampled/round | process wall (s) | outside the rounds (s) | "
          "round 1 (s) | later rounds, median (s) | peak driver RSS (MiB) | "
          "in-process round (s) | overhead ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['clients']} | {r['per_round']} | {r['process_wall_s']:.1f} | "
              f"{r['outside_rounds_s']:.1f} | {r['first_round_s']:.2f} | {r['round_s']:.2f} | "
              f"{r['peak_rss_mib']:.0f} | {r['in_process_round_s']:.4f} | "
              f"{r['overhead_ratio']:.0f} |")
    if args.registration:
        print("\n| clients | register, config parsed per node (s) | parsed once (s) | ratio |")
        print("|---|---|---|---|")
        for clients in sorted(args.populations):
            r = registration(clients)
            rows.append(r)
            print(f"| {clients} | {r['register_per_node_parse_s']:.2f} | "
                  f"{r['register_one_parse_s']:.2f} | {r['ratio']:.2f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
