"""RunConfig: defaults from pyproject, coercion, task defaults, validation messages."""

from __future__ import annotations

import tomllib
from dataclasses import fields

import pytest

from fl_sim.config import OPTIONS, PYPROJECT, ConfigError, RunConfig, defaults


def test_options_fields_and_pyproject_keys_agree():
    keys = set(tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"])
    assert {o.key for o in OPTIONS} == keys
    assert {f.name for f in fields(RunConfig)} == {k.replace("-", "_") for k in keys}
    assert len({o.flag for o in OPTIONS}) == len(OPTIONS)


def test_defaults_resolve_task_defaults():
    cfg = RunConfig.from_mapping({})
    assert cfg.task == defaults()["task"] == "regression"
    assert (cfg.num_server_rounds, cfg.local_epochs, cfg.batch_size, cfg.lr) == (10, 5, 16, 0.01)


def test_explicit_values_win_over_task_defaults_and_strings_are_coerced():
    cfg = RunConfig.from_mapping({"num-server-rounds": "3", "lr": "0.5", "clients": 2.0})
    assert (cfg.num_server_rounds, cfg.lr, cfg.clients) == (3, 0.5, 2)
    assert isinstance(cfg.clients, int)


def test_round_trip_through_run_config():
    cfg = RunConfig.from_mapping({"clients": 7, "seed": 3})
    again = RunConfig.from_mapping(cfg.to_run_config())
    assert again == cfg


@pytest.mark.parametrize(
    ("overrides", "flag", "fragment"),
    [
        ({"task": "nope"}, "--task", "allowed: "),
        ({"strategy": "fedsgd"}, "--strategy", "fedavg, fedprox"),
        ({"clients": 0}, "--clients", "must be >= 1"),
        ({"num-server-rounds": -1}, "--rounds", "must be >= 1"),
        ({"fraction-train": 1.5}, "--fraction-train", "(0, 1]"),
        ({"fraction-evaluate": 0.0}, "--fraction-evaluate", "(0, 1]"),
        ({"lr": -0.1}, "--lr", "must be > 0"),
        ({"batch-size": -4}, "--batch-size", ">= 1"),
        ({"run-name": "../escape"}, "--run-name", "plain folder name"),
        ({"clients": "many"}, "--clients", "expected int"),
        ({"no-such-key": 1}, "no-such-key", "unknown setting"),
    ],
)
def test_invalid_settings_name_the_flag(overrides, flag, fragment):
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_mapping(overrides)
    message = str(caught.value)
    assert message.startswith(f"{flag}: ")
    assert fragment in message
    assert "\n" not in message


def test_unknown_task_lists_known_tasks():
    with pytest.raises(ConfigError, match="regression"):
        RunConfig.from_mapping({"task": "nope"})
