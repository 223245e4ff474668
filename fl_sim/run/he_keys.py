"""Provisioning of a run's CKKS keys for ``--he``, as a deployment's provisioner would.

The CLI makes a fresh key pair for each run (and each resume) in a private temporary
folder outside the run folder, so a run folder someone is sent never holds a secret key,
and removes it when the run ends. Clients read the secret context, the server only the
public one (:mod:`strategies.he`). Under ``flwr run .`` nothing provisions keys: set
``he-keys`` to a folder made with :func:`strategies.he.provision`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from fl_sim.options import RunConfig


@contextmanager
def provisioned(cfg: RunConfig) -> Iterator[RunConfig]:
    """``cfg`` with ``he-keys`` pointing to fresh keys while inside (unchanged without --he).

    A ``he-keys`` folder that still exists is used as it is; a stale one (a resumed run's
    stored path, removed when that run ended) is replaced.
    """
    keys = cfg.encryption.he_keys
    if not cfg.encryption.he or (keys and Path(keys).is_dir()):
        yield cfg
        return
    from strategies import he

    folder = Path(tempfile.mkdtemp(prefix="fl-sim-he-"))  # mode 0700: this user only
    try:
        he.provision(folder, cfg.encryption.he_poly_degree)
        yield replace(cfg, encryption=replace(cfg.encryption, he_keys=str(folder)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
