"""Provisioning of a run's CKKS keys for ``--he``, as a deployment's provisioner would.

The CLI makes a fresh key pair for each run (and each resume) in a private temporary
folder outside the run folder, so a run folder someone is sent never holds a secret key,
and removes it when the run ends, also after Ctrl-C or SIGTERM (:func:`remove_all`).
Clients read the secret context, the server only the public one (:mod:`strategies.he`).
Under ``flwr run .`` nothing provisions keys: set ``he-keys`` to a folder made with
:func:`strategies.he.provision`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from fl_sim.options import RunConfig

_LIVE: set[Path] = set()
"""Key folders of runs still going in this process (:func:`remove_all` ends them)."""


@contextmanager
def provisioned(cfg: RunConfig) -> Iterator[RunConfig]:
    """``cfg`` with ``he-keys`` pointing to fresh keys while inside (unchanged without --he).

    Always fresh: a resumed run's stored ``he-keys`` names a folder of the earlier process,
    which is gone or, if that process was killed, must not be reused.
    """
    if not cfg.encryption.he:
        yield cfg
        return
    from strategies import he

    folder = Path(tempfile.mkdtemp(prefix="fl-sim-he-"))  # mode 0700: this user only
    _LIVE.add(folder)
    try:
        he.provision(folder, cfg.encryption.he_poly_degree)
        yield replace(cfg, encryption=replace(cfg.encryption, he_keys=str(folder)))
    finally:
        _remove(folder)


def remove_all() -> None:
    """Remove every key folder this process provisioned (an interrupted run ends with
    ``os._exit``, which skips :func:`provisioned`'s cleanup)."""
    for folder in list(_LIVE):
        _remove(folder)


def _remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    _LIVE.discard(folder)
