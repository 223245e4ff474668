"""Task and strategy registries: discovery, lookup errors, duplicate names."""

from __future__ import annotations

import pytest
from flwr.serverapp.strategy import FedAvg

from fl_sim.config import RunConfig
from strategies import registry as strategy_registry
from tasks import registry as task_registry
from tasks.registry import Registry


def test_regression_task_is_discovered():
    assert "regression" in task_registry.names()
    cls = task_registry.get("regression")
    assert cls.name == "regression"
    assert {"num-server-rounds", "local-epochs", "batch-size", "lr"} <= set(cls.defaults)


def test_fedavg_builder_uses_run_config():
    settings = RunConfig.from_mapping({"clients": 4, "fraction-train": 0.5}).to_run_config()
    strategy = strategy_registry.build(settings)
    assert isinstance(strategy, FedAvg)
    assert strategy.fraction_train == 0.5
    assert strategy.min_available_nodes == 4
    assert strategy.min_train_nodes == 1


def test_unknown_names_list_the_known_ones():
    with pytest.raises(KeyError, match="known: .*fedavg"):
        strategy_registry.get("fedsgd")
    with pytest.raises(KeyError, match="known: .*regression"):
        task_registry.get("gan")


def test_a_name_cannot_be_registered_twice():
    registry = Registry("tasks", "thing")
    registry.register("x")(int)
    registry.register("x")(int)  # the same object again is harmless (re-import)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("x")(str)
