"""The cache of fits of public data: keys, checked entries, atomic and concurrent writes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from fl_core import cache as cache_module
from fl_core.cache import Cache, cache_dir, entry_key
from tests.conftest import REPO
from tests.data_files import hostile_torch_file

KIND = "test-kind"


def payload() -> dict:
    generator = torch.Generator().manual_seed(0)
    return {"weights": {"w": torch.randn(64, 64, generator=generator)},
            "record": {"accuracy": 0.5, "name": "x"}, "fit_seconds": 1.5}


def stored(tmp_path: Path, said: list | None = None) -> tuple[Cache, str]:
    cache = Cache(tmp_path / "cache", (said if said is not None else []).append)
    key = entry_key(KIND, {"seed": 0}, (cache_module,))
    assert cache.store(KIND, key, payload(), {"seed": 0})
    return cache, key


def same(a: dict, b: dict) -> bool:
    return (torch.equal(a["weights"]["w"], b["weights"]["w"]) and a["record"] == b["record"]
            and a["fit_seconds"] == b["fit_seconds"])


def test_the_flag_wins_over_the_variable_which_wins_over_xdg_and_home(tmp_path):
    env = {"FL_SIM_CACHE_DIR": str(tmp_path / "env"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert cache_dir(str(tmp_path / "flag"), env) == tmp_path / "flag"
    assert cache_dir("", env) == tmp_path / "env"
    assert cache_dir("", {"XDG_CACHE_HOME": str(tmp_path / "xdg")}) == tmp_path / "xdg" / "fl-sim"
    assert cache_dir("", {}) == Path.home() / ".cache" / "fl-sim"
    assert cache_dir("~/c", {}) == Path.home() / "c"


def test_the_suite_never_uses_the_users_cache(session_cache):
    assert cache_dir() == session_cache


def test_a_stored_entry_loads_back_with_its_manifest(tmp_path):
    cache, key = stored(tmp_path)
    assert same(cache.load(KIND, key), payload())
    manifest_path, payload_path = cache.paths(KIND, key)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["key"] == key and manifest["bytes"] == payload_path.stat().st_size
    assert manifest["inputs"] == {"seed": 0}
    assert not list(manifest_path.parent.glob(".*tmp*"))  # no temporary file left behind


def test_every_input_the_code_and_the_environment_change_the_key(monkeypatch):
    base = entry_key(KIND, {"seed": 0}, (cache_module,))
    assert base == entry_key(KIND, {"seed": 0}, (cache_module,))
    assert base != entry_key(KIND, {"seed": 1}, (cache_module,))
    assert base != entry_key("other-kind", {"seed": 0}, (cache_module,))
    assert base != entry_key(KIND, {"seed": 0}, (cache_module,), "mps")
    monkeypatch.setattr(cache_module, "source_hash", lambda modules: "edited code")
    assert base != entry_key(KIND, {"seed": 0}, (cache_module,))


def test_the_thread_count_is_part_of_the_key():
    """1 and 2 threads give other bits of the same fit (measured), so other entries."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = entry_key(KIND, {}, (cache_module,))
        torch.set_num_threads(2)
        two = entry_key(KIND, {}, (cache_module,))
    finally:
        torch.set_num_threads(threads)
    assert one != two


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("damage", "words"), [
    (lambda m, p: flip_a_byte(p), "checksum"),
    (lambda m, p: p.write_bytes(p.read_bytes()[:1000]), "truncated"),
    (lambda m, p: m.unlink(), "no manifest"),
    (lambda m, p: m.write_text("{not json"), "unreadable"),
    (lambda m, p: m.write_text(json.dumps({**json.loads(m.read_text()), "key": "other"})),
     "another entry"),
])
def test_a_damaged_or_partial_entry_is_a_miss_and_is_said(tmp_path, damage, words):
    said = []
    cache, key = stored(tmp_path, said)
    damage(*cache.paths(KIND, key))
    assert cache.load(KIND, key) is None
    assert len(said) == 1 and words in said[0] and "fitting again" in said[0]
    assert cache.store(KIND, key, payload(), {"seed": 0})  # the refit replaces it
    assert same(cache.load(KIND, key), payload())


def test_a_missing_entry_is_a_quiet_miss(tmp_path):
    said = []
    assert Cache(tmp_path / "none", said.append).load(KIND, "0" * 64) is None and said == []


def test_a_payload_that_asks_to_run_code_is_never_run(tmp_path):
    """Even with a manifest that vouches for it: loading builds only tensors and containers."""
    said = []
    cache, key = stored(tmp_path, said)
    manifest_path, payload_path = cache.paths(KIND, key)
    hostile_torch_file(payload_path, tmp_path / "marker", payload())
    data = payload_path.read_bytes()
    manifest = json.loads(manifest_path.read_text())
    manifest.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    manifest_path.write_text(json.dumps(manifest))
    assert cache.load(KIND, key) is None and "cannot be read" in said[0]
    assert not (tmp_path / "marker").exists()


def test_a_cache_that_cannot_be_written_costs_the_entry_not_the_run(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    said = []
    cache = Cache(tmp_path / "file", said.append)
    assert cache.store(KIND, "0" * 64, payload(), {}) is False
    assert len(said) == 1 and "cannot write" in said[0] and cache.load(KIND, "0" * 64) is None


def test_concurrent_writers_of_one_key_leave_a_valid_entry(tmp_path):
    cache = Cache(tmp_path / "cache")
    key = entry_key(KIND, {"seed": 0}, (cache_module,))
    loaded, errors = [], []

    def write_then_read() -> None:
        try:
            for _ in range(5):
                assert cache.store(KIND, key, payload(), {"seed": 0})
                loaded.append(cache.load(KIND, key))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=write_then_read) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(loaded) == 30 and all(same(entry, payload()) for entry in loaded)
    assert same(cache.load(KIND, key), payload())
    assert not list((tmp_path / "cache" / KIND).glob(".*tmp*"))


WRITER = """
import sys, torch
from fl_core import cache as cache_module
from fl_core.cache import Cache, entry_key
generator = torch.Generator().manual_seed(0)
payload = {"weights": {"w": torch.randn(64, 64, generator=generator)},
           "record": {"accuracy": 0.5, "name": "x"}, "fit_seconds": 1.5}
cache = Cache(sys.argv[1])
key = entry_key("test-kind", {"seed": 0}, (cache_module,))
for _ in range(20):
    assert cache.store("test-kind", key, payload, {"seed": 0})
    entry = cache.load("test-kind", key)
    assert torch.equal(entry["weights"]["w"], payload["weights"]["w"])
print(key)
"""


def test_two_processes_writing_one_key_leave_a_valid_entry(tmp_path):
    """Two runs fill one entry at once: byte-identical payloads, atomic renames."""
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "cache")],
                                cwd=REPO, stdout=subprocess.PIPE, text=True)
               for _ in range(2)]
    keys = {writer.communicate(timeout=120)[0].strip() for writer in writers}
    assert [writer.returncode for writer in writers] == [0, 0] and len(keys) == 1
    assert same(Cache(tmp_path / "cache").load(KIND, keys.pop()), payload())
