"""A real DCGAN run folder made in-process (no Ray), for release and audit tests.

The task's own ``train`` runs for every client and FedAvg averages the replies, as the
ServerApp would; the folder gets what a CLI run writes that ``fl_sim sample``/``audit``
read: ``config.json`` (settings), ``clients.csv`` (per-client epsilon from the clients'
real accountants) and ``weights/round_XXX.pt`` for round 0 (initialisation) and every
round after.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, RecordDict

from fl_sim.options import RunConfig
from fl_sim.record.results import client_columns
from tasks.base import Partition, Workspace, fedavg
from tasks.dcgan.task import DCGANTask
from tasks.dcgan.weights import weights_path

SMALL = {"dataset": "digits", "clients": 2, "num-server-rounds": 1, "local-epochs": 1,
         "batch-size": 32, "gan-width": 8}


def make_dcgan_run(run_dir: Path, **overrides: Any) -> Path:
    """Train a small DCGAN run into ``run_dir`` and return it.

    ``overrides`` are run-config keys (kebab-case) on top of :data:`SMALL`; e.g.
    ``dp=False`` or ``**{"num-server-rounds": 2}``.
    """
    torch.set_num_threads(1)
    cfg = RunConfig.from_mapping({"task": "dcgan", **SMALL, **overrides,
                                  "run-dir": str(run_dir)})
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(
        {"run_id": run_dir.name, "settings": cfg.to_run_config(), "status": "finished"},
        indent=2))
    task = DCGANTask(cfg, Workspace(run_dir))
    clients = cfg.federation.clients
    states = [RecordDict() for _ in range(clients)]
    arrays = task.initial_arrays()
    _save(arrays, run_dir, 0)
    with (run_dir / "clients.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, client_columns(task.client_metrics, task.dp))
        writer.writeheader()
        for server_round in range(1, cfg.federation.num_server_rounds + 1):
            results = [task.train(arrays, Partition(i, clients), states[i], server_round)
                       for i in range(clients)]
            arrays = fedavg(results)
            _save(arrays, run_dir, server_round)
            for i, result in enumerate(results):
                row = {"run_id": run_dir.name, "round": server_round, "phase": "train",
                       "partition_id": i, "num_examples": result.num_examples, "status": "ok"}
                if task.dp:
                    row["epsilon"] = result.metrics["epsilon"]
                writer.writerow(row)
    return run_dir


def _save(arrays: ArrayRecord, run_dir: Path, server_round: int) -> None:
    path = weights_path(run_dir, server_round)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(arrays.to_torch_state_dict(), path)
