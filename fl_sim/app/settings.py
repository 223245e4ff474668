"""The run's typed settings as the apps and mods see them, built once per process.

Flower hands every app and mod the run config as a flat mapping of kebab-case keys
(``context.run_config``); validating it into a :class:`~fl_sim.options.RunConfig` on
every message would repeat the same checks hundreds of times, so each process keeps one
per distinct config.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from fl_sim.options import RunConfig


@lru_cache(maxsize=8)
def _settings(frozen: tuple[tuple[str, Any], ...]) -> RunConfig:
    return RunConfig.from_mapping(dict(frozen))


def settings_of(run_config: Mapping[str, Any]) -> RunConfig:
    """The validated settings of ``run_config`` (``context.run_config``), cached."""
    return _settings(tuple(sorted(run_config.items())))
