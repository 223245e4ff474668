"""Atomic, durable file writes: the one way the harness and the tasks replace a file.

A reader (the report, a resumed run, a user's script) must never see half a file, and a
machine that loses power right after a round must keep it. So every file is written to a
temporary name in the same folder, flushed and fsynced, renamed over the target (atomic
on POSIX), and the folder is fsynced so the rename itself survives.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def replacing(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it atomically becomes ``path``.

    Parameters
    ----------
    path : path
        The file to create or replace; its folder is created if missing.
    suffix : str
        Ending the temporary name needs for writers that add one (``".npz"`` for
        ``numpy.savez``, which appends it otherwise).

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The process and the thread both name the temporary file: two writers of one path
    # (two runs, or two threads of one) never write into each other's file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp{suffix}")
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Replace ``path`` with ``data``, atomically and durably."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Replace ``path`` with UTF-8 ``text``, atomically and durably."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Mapping[str, Any] | list, sort_keys: bool = True,
               default: Any = str) -> Path:
    """Replace ``path`` with indented JSON (``sort_keys=False`` keeps the mapping's order)."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=sort_keys, default=default)
                      + "\n")


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform without directory handles: the rename is still atomic
        return
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
