"""A large simulated population starts in time that does not grow with a per-client parse.

Flower registers one context per simulated node; what each registration costs is paid
100,000 times by a cross-device population (docs/deployment-and-scale.md).
"""

from __future__ import annotations

import pytest
from flwr.common import config as flower_config
from flwr.server.superlink.fleet.vce import vce_api

from fl_core import flower
from fl_sim.options import PROJECT_ROOT, RunConfig

NODES = 300


@pytest.fixture
def parses(monkeypatch) -> list[str]:
    """Every parse of the app's pyproject.toml, by folder."""
    calls: list[str] = []
    real = flower_config.get_project_config
    monkeypatch.setattr(flower_config, "get_project_config",
                        lambda folder: calls.append(str(folder)) or real(folder))
    return calls


def _register(overrides: dict) -> dict:
    run = flower.new_run(overrides)
    mapping = {node_id: node_id for node_id in range(NODES)}
    return vce_api._register_node_info_stores(mapping, run, app_dir=str(PROJECT_ROOT))


def test_flower_alone_parses_the_app_config_once_per_node(parses):
    _register({"clients": NODES})
    assert len(parses) == NODES


def test_the_app_config_is_parsed_once_per_run_and_every_node_gets_it(parses):
    overrides = RunConfig.from_mapping({"clients": NODES, "lr": 0.05}).to_run_config()
    with flower.app_config_read_once():
        stores = _register(overrides)
    assert parses == [str(PROJECT_ROOT)]
    contexts = [store.retrieve_context(next(iter(store.run_infos))) for store in stores.values()]
    assert len(contexts) == NODES
    assert all(c.run_config == overrides for c in contexts)
    assert contexts[0].run_config["lr"] == 0.05 and contexts[0].run_config["clients"] == NODES
    # each node's context is its own copy; the store's reference copy is shared
    assert contexts[0].run_config is not contexts[1].run_config
    # once outside, Flower's own function is back
    _register(overrides)
    assert len(parses) == 1 + NODES
