"""What a Ray worker imports as it starts, before it becomes a client's actor.

Why: the first round of a small run used to wait seconds for each actor to import Flower's
actor module, the ClientApp and the task (torch, Opacus) after the actor was created.
Ray starts one idle worker per CPU as soon as the driver connects, and Flower's actors take
those workers; ``fl_sim.run.simulation.start_ray`` names this module in Ray's
``preload_python_modules``, so each such worker imports the client's modules while the
driver is still importing its own: the work overlaps instead of queueing.

Importing never fails a worker: a module that cannot be imported here fails later, where
the ClientApp imports it, with the error a run reports today.
"""

from __future__ import annotations

import importlib
import os

MODULES_ENV = "FL_SIM_WARM_MODULES"
"""Comma-separated modules to import (set by the launcher, inherited by Ray's workers)."""

CLIENT_MODULES = ("flwr.simulation.ray_transport.ray_actor", "fl_sim.app.client_app")
"""What every simulated client imports: Flower's actor and the ClientApp."""


def warm(modules: str) -> list[str]:
    """Import each module of the comma-separated ``modules``; return those that failed."""
    failed = []
    for name in filter(None, (m.strip() for m in modules.split(","))):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the ClientApp's own import reports it
            failed.append(name)
    return failed


def match_ray_threads() -> int | None:
    """Give torch the threads Ray granted this actor (its ``OMP_NUM_THREADS``).

    Why: torch fixes its thread count when it is first imported, and a preloaded worker
    imports it before Ray sets the actor's ``OMP_NUM_THREADS`` (= its ``--client-cpus``).
    Without this, each of two one-CPU actors on two cores ran two threads, and the
    default DCGAN's rounds took about three times as long. Called in the actor, once the
    environment is the actor's; a process Ray did not start (a SuperNode) keeps torch's own
    choice. Returns the count set, or None.
    """
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if not threads.isdigit() or int(threads) < 1:
        return None
    import torch

    if torch.get_num_threads() != int(threads):
        torch.set_num_threads(int(threads))
    return int(threads)


warm(os.environ.get(MODULES_ENV, ""))
