"""A content-addressed cache for what a run computes from public data, its seed and the code.

Why: some of a run's work reads no private data and changes only when its inputs do: the
DCGAN's public prior (a minute or more on 2 cores) and the server's reference classifier
for FID. Fitting them again in every run of a study spends that time for bits already
computed. They are kept here, between runs, under a key that names every input that can
change a single bit of the result, so that a run with the cache computes exactly what the
same run without it would.

The key (:func:`entry_key`) is the SHA-256 of the caller's inputs (its settings and seed,
digests of the arrays it reads), a hash of the source files of the code that computes the
entry (:func:`source_hash`), and the environment (:func:`environment`): the versions of
Python, torch, NumPy, Opacus, matplotlib and Pillow, the machine, torch's CPU kernel family,
the device, and torch's thread count, which changes the bits of a fit (measured: the public
prior and the reference classifier give other weights with 1 thread than with 2; each count
alone is reproducible).

An entry is two files in ``<root>/<kind>/``: ``<key>.pt``, the payload (tensors, numbers and
strings, saved with ``torch.save``), and ``<key>.json``, its manifest: the payload's SHA-256
and size, and the readable inputs, for whoever looks in the folder. Both are written
atomically (:mod:`fl_core.atomic`: a temporary file, fsync, rename), the payload first, so
a manifest always names a complete payload. A reader checks the checksum before it
unpickles anything, and unpickles with ``weights_only=True`` (no code runs, see
:mod:`fl_core.safe_load`); a missing manifest, a truncated or altered payload, or a
payload that is not a mapping is a miss, said once, and the caller fits again and replaces
the entry (callers also refuse an entry whose weights do not fit their networks). Two
runs that fill one key at once write identical bytes (``torch.save`` of equal tensors is
byte-identical), so whichever rename lands last leaves a valid entry; no lock is needed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from fl_core.atomic import write_bytes, write_json
from fl_core.versions import installed_versions

ENV_VAR = "FL_SIM_CACHE_DIR"
FORMAT = 1
"""Layout of an entry; a new layout is a new key, never a misread old entry."""
PACKAGES = ("torch", "numpy", "opacus", "matplotlib", "pillow")
"""Libraries whose version can change what a cached fit computes (the fonts of the public
digits ship with matplotlib and are drawn by Pillow)."""


def cache_dir(flag: str = "", environ: Mapping[str, str] | None = None) -> Path:
    """The cache folder: ``flag``, else ``$FL_SIM_CACHE_DIR``, else the XDG cache folder.

    Parameters
    ----------
    flag : str
        ``--cache-dir`` ("" when not given).
    environ : mapping, optional
        The environment to read (default: this process's).

    Returns
    -------
    Path
        ``flag``, ``$FL_SIM_CACHE_DIR``, ``$XDG_CACHE_HOME/fl-sim`` or ``~/.cache/fl-sim``,
        the first that is set, with ``~`` expanded.
    """
    env = os.environ if environ is None else environ
    if flag:
        return Path(flag).expanduser()
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR]).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "fl-sim"
    return Path("~/.cache/fl-sim").expanduser()


def source_hash(modules: Iterable[ModuleType]) -> str:
    """SHA-256 of the source files of ``modules``, by module name.

    The code that computes an entry is part of its key: an edit to a training loop, a
    network or a constant in those files is another key, so no entry outlives the code
    that made it. (Values set at run time, such as a test's smaller recipe, are not in
    the files: callers put them in their inputs.)
    """
    digest = hashlib.sha256()
    for module in sorted(modules, key=lambda m: m.__name__):
        digest.update(module.__name__.encode())
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def environment(device: str = "cpu") -> dict[str, Any]:
    """What, besides the inputs and the code, decides the bits of a fit on ``device``."""
    import torch

    found: dict[str, Any] = {**installed_versions(PACKAGES),
                             "machine": platform.machine(),
                             "cpu-capability": torch.backends.cpu.get_cpu_capability(),
                             "torch-threads": torch.get_num_threads(),
                             "device": str(device)}
    if str(device).startswith("cuda"):
        found["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return found


def digest(arrays: Mapping[str, Any]) -> str:
    """SHA-256 of named arrays or tensors: names, dtypes, shapes and bytes.

    For inputs that are data (a held-out split, initial weights): hashing the arrays
    themselves makes the key follow the data, whatever setting or file produced it.
    """
    import numpy as np

    found = hashlib.sha256()
    for name in sorted(arrays):
        value = arrays[name]
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().cpu().contiguous().numpy()
        value = np.ascontiguousarray(value)
        found.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        found.update(value.tobytes())
    return found.hexdigest()


def entry_key(kind: str, inputs: Mapping[str, Any], code: Iterable[ModuleType],
              device: str = "cpu") -> str:
    """The key of an entry: SHA-256 of its kind, inputs, code and environment.

    Parameters
    ----------
    kind : str
        What is cached (its folder under the root), e.g. ``"dcgan-public-prior"``.
    inputs : mapping
        JSON-serialisable settings, seeds and digests (:func:`digest`) that the result
        depends on.
    code : iterable of module
        The modules whose source computes the result (:func:`source_hash`).
    device : str
        Where the fit runs (``"cpu"``, ``"cuda"``, ...).
    """
    described = {"format": FORMAT, "kind": kind, "inputs": dict(inputs),
                 "code": source_hash(code), "environment": environment(device)}
    text = json.dumps(described, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _silent(line: str) -> None:
    """Say nothing."""


class Cache:
    """The cache folder: load and store entries by key, checked, atomically.

    Parameters
    ----------
    root : path
        The folder (:func:`cache_dir`); created on the first store.
    say : callable
        Prints one line: a damaged entry that is fitted again, a store that failed.
    """

    def __init__(self, root: str | Path, say: Callable[[str], None] = _silent) -> None:
        self.root = Path(root)
        self.say = say

    def paths(self, kind: str, key: str) -> tuple[Path, Path]:
        """(manifest, payload) of an entry."""
        folder = self.root / kind
        return folder / f"{key}.json", folder / f"{key}.pt"

    def load(self, kind: str, key: str) -> dict[str, Any] | None:
        """The entry's payload, or None if it is missing or anything about it is wrong.

        Nothing is unpickled before the payload's SHA-256 and size match its manifest,
        and then only tensors, numbers, strings and containers (``weights_only=True``).
        """
        manifest_path, payload_path = self.paths(kind, key)
        try:
            if not manifest_path.is_file():
                if payload_path.exists():
                    self._damaged(payload_path, "no manifest beside it (an unfinished write)")
                return None
            manifest = json.loads(manifest_path.read_text())
            data = payload_path.read_bytes()
        except (OSError, ValueError) as error:
            self._damaged(manifest_path, f"unreadable ({type(error).__name__})")
            return None
        problem = _mismatch(manifest, kind, key, data)
        if problem:
            self._damaged(payload_path, problem)
            return None
        import torch

        try:
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any failure: fit again, never use it
            self._damaged(payload_path, f"cannot be read ({type(error).__name__})")
            return None
        if not isinstance(payload, dict):
            self._damaged(payload_path, "not a mapping")
            return None
        return payload

    def store(self, kind: str, key: str, payload: Mapping[str, Any],
              inputs: Mapping[str, Any]) -> bool:
        """Write an entry (payload, then manifest); False, said once, if it cannot be.

        A cache that cannot be written (a read-only home, a full disk) costs the next run
        the fit again, not this run its results.
        """
        import torch

        buffer = io.BytesIO()
        torch.save(dict(payload), buffer)
        data = buffer.getvalue()
        manifest = {"format": FORMAT, "kind": kind, "key": key,
                    "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                    "created": datetime.now(UTC).isoformat(timespec="seconds"),
                    "inputs": dict(inputs)}
        manifest_path, payload_path = self.paths(kind, key)
        try:
            write_bytes(payload_path, data)
            write_json(manifest_path, manifest)
        except OSError as error:
            self.say(f"cache: cannot write {payload_path} ({error.strerror or error}); "
                     "the run goes on without it")
            return False
        return True

    def _damaged(self, path: Path, problem: str) -> None:
        self.say(f"cache: {path}: {problem}; fitting again")


def _mismatch(manifest: Any, kind: str, key: str, data: bytes) -> str | None:
    """Why ``manifest`` does not vouch for ``data`` as entry ``kind``/``key``, or None."""
    if not isinstance(manifest, dict):
        return "its manifest is not a mapping"
    if manifest.get("format") != FORMAT or manifest.get("kind") != kind \
            or manifest.get("key") != key:
        return "its manifest names another entry"
    if manifest.get("bytes") != len(data):
        return f"{len(data)} bytes where its manifest says {manifest.get('bytes')} (truncated?)"
    if manifest.get("sha256") != hashlib.sha256(data).hexdigest():
        return "its checksum does not match its manifest (altered or damaged)"
    return None
