"""Synthetic run folders written by the real ``ResultsWriter``, for report tests.

privacy.csv and sample grids are written by hand as the DP-FedAvg and DCGAN code
write them (the columns and paths of docs/results-format.md).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from fl_sim.record.results import ResultsWriter

PRIVACY_COLUMNS = ("run_id", "round", "epsilon", "delta", "noise_multiplier", "clipping_norm",
                   "sampled_clients", "population", "accountant", "status")


def write_run(
    run_dir: Path,
    *,
    clients: int = 3,
    rounds: int = 4,
    kind: str = "classifier",
    sample_dp: bool = True,
    client_dp: bool = False,
    samples: bool = False,
    recorded_rounds: int | None = None,
    status: str = "finished",
    max_epsilon: float = 0.0,
    lr: float = 0.01,
    seed: int = 0,
    epsilon_scale: float = 1.0,
) -> Path:
    """Write a run folder; ``recorded_rounds`` < ``rounds`` imitates an interrupted run.

    ``kind`` "classifier" has loss/accuracy; "dcgan" has g_loss/d_loss and server FID,
    inception score and reference accuracy. Every number is a deterministic function
    of round and client, so tests can recompute it.
    """
    rng = np.random.default_rng(seed)
    recorded = rounds if recorded_rounds is None else recorded_rounds
    if kind == "dcgan":
        task_metrics, server_metrics = ("g_loss", "d_loss"), ("fid", "inception_score",
                                                               "reference_accuracy")
    else:
        task_metrics, server_metrics = ("loss", "accuracy"), ("loss", "accuracy")
    writer = ResultsWriter(run_dir, task_metrics, server_metrics, sample_dp=sample_dp,
                           client_dp=client_dp)
    run_id = run_dir.name
    settings = {"task": kind, "strategy": "dp-fedavg" if client_dp else "fedavg",
                "clients": clients, "num-server-rounds": rounds, "lr": lr, "seed": seed,
                "delta": 1e-5, "max-epsilon": max_epsilon}
    writer.write_config({"run_id": run_id, "settings": settings, "status": status,
                         "started_at": "2026-11-28T00:00:00+00:00", "wall_seconds": 12.5})
    writer.rounds.append([_server_row(run_id, 0, kind, lr)])
    privacy = []
    for rnd in range(1, recorded + 1):
        rows = []
        for cid in range(clients):
            for phase in ("train", "evaluate"):
                row = {"run_id": run_id, "round": rnd, "phase": phase, "partition_id": cid,
                       "node_id": 1000 + cid, "num_examples": 50, "status": "ok",
                       "seconds": round(0.5 + 0.1 * cid + rng.uniform(0, 0.05), 4)}
                if kind == "dcgan":
                    row.update(g_loss=1.0 + 0.1 * rnd, d_loss=1.5 - 0.1 * rnd)
                else:
                    row["loss"] = 2.0 / (rnd + cid * 0.1) + (0.05 if phase == "evaluate" else 0)
                    row["accuracy"] = min(0.99, 0.2 * rnd * lr * 100 + 0.01 * cid)
                if sample_dp and phase == "train":
                    row["epsilon"] = epsilon_of(rnd, cid) * epsilon_scale
                rows.append(row)
        writer.clients.append(rows)
        round_row = _server_row(run_id, rnd, kind, lr)
        if kind != "dcgan":
            round_row.update(train_loss=2.0 / rnd, evaluate_loss=2.0 / rnd + 0.05)
        round_row.update(train_replies=clients, train_failures=0, evaluate_replies=clients,
                         evaluate_failures=0, seconds=1.0 + rnd / 10)
        if kind != "dcgan":
            round_row["evaluate_accuracy"] = min(0.99, 0.2 * rnd * lr * 100)
        if sample_dp:
            round_row["epsilon_max"] = (max(epsilon_of(rnd, c) for c in range(clients))
                                        * epsilon_scale)
        if sample_dp or client_dp:  # the headline, as RunRecorder.end_round writes it
            round_row.update(epsilon=0.5 * rnd if client_dp else round_row["epsilon_max"],
                             epsilon_level="client" if client_dp else "sample", delta=1e-5)
        writer.rounds.append([round_row])
        if client_dp:
            privacy.append({"run_id": run_id, "round": rnd, "epsilon": 0.5 * rnd, "delta": 1e-5,
                            "noise_multiplier": 1.0, "clipping_norm": 1.0,
                            "sampled_clients": clients, "population": clients,
                            "accountant": "rdp", "status": "ok"})
    if client_dp:
        with (run_dir / "privacy.csv").open("w", newline="") as handle:
            out = csv.DictWriter(handle, fieldnames=PRIVACY_COLUMNS)
            out.writeheader()
            out.writerows(privacy)
    if samples:
        from PIL import Image

        (run_dir / "samples").mkdir()
        for rnd in range(0, recorded + 1):
            pixels = (rng.uniform(0, 255, (64, 64)) * min(1.0, 0.2 + rnd / rounds)).astype("uint8")
            Image.fromarray(pixels, mode="L").save(run_dir / "samples" / f"round_{rnd:03d}.png")
    if recorded == rounds and status == "finished":
        writer.write_json("summary.json", {"loss": 2.0 / rounds})
    writer.close()
    return run_dir


def epsilon_of(rnd: int, cid: int) -> float:
    """The synthetic sample-level epsilon of client ``cid`` after round ``rnd``."""
    return round(0.3 * rnd * (1 + 0.2 * cid), 6)


def _server_row(run_id: str, rnd: int, kind: str, lr: float) -> dict:
    row = {"run_id": run_id, "round": rnd, "status": "ok"}
    if kind == "dcgan":
        row.update(server_fid=200.0 / (rnd + 1), server_inception_score=1 + 0.3 * rnd,
                   server_reference_accuracy=0.1 + 0.15 * rnd)
    else:
        row.update(server_loss=2.1 / (rnd + 1),
                   server_accuracy=min(0.99, 0.1 + 0.2 * rnd * lr * 100))
    return row
