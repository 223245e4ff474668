"""In-process probe of DP-DCGAN training quality: FedAvg of the task's own ``train``, no Ray.

Why: a full run costs minutes of Ray start-up and evaluation; this trains the clients one
after another with :meth:`tasks.dcgan.task.DCGANTask.train` (so DP, Poisson sampling, the
accountant and the kept Adam states are exactly the task's), averages them weighted by
examples as FedAvg does, prints the clients' mean metrics and the server's (FID, ...) and
writes the task's own fixed-noise grid of every round (``OUT_DIR/samples``), so settings
can be compared by eye within a few minutes.

Usage::

    PYTHONPATH=. python benchmarks/dcgan_quality_probe.py OUT_DIR ROUNDS '{"lr": 0.001}'

The JSON holds run-config overrides (kebab-case keys); ``--clients`` is 5 unless given.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import RecordDict

from fl_sim.options import RunConfig
from tasks.base import Partition, Workspace, fedavg
from tasks.dcgan.task import DCGANTask


def main(out: str, rounds: int, overrides: dict) -> None:
    torch.set_num_threads(1)  # what one Ray client gets with --client-cpus 1
    settings = {"task": "dcgan", "clients": 5, **overrides}
    config = RunConfig.from_mapping({**settings, "run-dir": out})
    task = DCGANTask(config, Workspace(Path(out)))
    artifacts = task.artifacts(out)
    clients = config.federation.clients
    arrays, states = task.initial_arrays(), [RecordDict() for _ in range(clients)]
    start = time.time()
    print(0, {k: round(v, 3) for k, v in task.central_evaluate(0, arrays).items()}, flush=True)
    artifacts.after_round(0, arrays)
    for server_round in range(1, rounds + 1):
        results = [task.train(arrays, Partition(i, clients), states[i], server_round)
                   for i in range(clients)]
        arrays = fedavg(results)
        means = {k: round(float(np.mean([r.metrics[k] for r in results])), 3)
                 for k in results[0].metrics}
        server = task.central_evaluate(server_round, arrays)
        artifacts.after_round(server_round, arrays)
        print(server_round, f"{time.time() - start:.0f}s", means,
              {k: round(v, 3) for k, v in server.items()}, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})
