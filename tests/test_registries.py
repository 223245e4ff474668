"""Task and strategy registries: explicit entries, lookup errors, typed builders."""

from __future__ import annotations

import pytest
from flwr.serverapp.strategy import FedAvg

from fl_core.federation import TASK_DEFAULTED
from fl_core.registry import Registry
from fl_sim.options import RunConfig
from strategies import registry as strategy_registry
from tasks import registry as task_registry
from tasks.regression import RegressionTask


def test_every_task_has_its_defaults_and_its_class():
    assert task_registry.get("regression") is RegressionTask
    for name in task_registry.names():
        assert set(task_registry.DEFAULTS[name]) == set(TASK_DEFAULTED)
        assert name in task_registry.GROUPS
        assert callable(task_registry.get(name))
    assert set(strategy_registry.GROUPS) == set(strategy_registry.names())


def test_fedavg_builder_uses_typed_settings():
    settings = RunConfig.from_mapping({"clients": 4, "fraction-train": 0.5})
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
    with pytest.raises(KeyError, match="known: .*dcgan"):
        task_registry.defaults_of("gan")


def test_an_entry_must_name_a_module_and_an_attribute():
    with pytest.raises(ValueError, match="module:attribute"):
        Registry("thing", {"x": "tasks.regression.RegressionTask"})
    registry = Registry("thing", {"x": "tasks.regression:RegressionTask"})
    assert registry.target("x") == "tasks.regression:RegressionTask"
    assert registry.get("x") is registry.get("x") is RegressionTask
