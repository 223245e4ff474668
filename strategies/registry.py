"""Strategy registry: ``--strategy`` name -> builder ``(run_config) -> Strategy``.

Each strategy lives in its own module and registers a builder with :func:`register`;
adding a strategy is a one-file change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flwr.serverapp.strategy import Strategy

from tasks.registry import Registry

Builder = Callable[[Mapping[str, Any]], Strategy]

STRATEGIES = Registry("strategies", "strategy")
register: Callable[[str], Callable[[Builder], Builder]] = STRATEGIES.register
names = STRATEGIES.names
get = STRATEGIES.get


def build(config: Mapping[str, Any]) -> Strategy:
    """Build the strategy named by ``config["strategy"]`` (inside SecAgg+ if ``secagg``)."""
    from strategies.secagg import wrap_if_asked

    return wrap_if_asked(get(str(config["strategy"]))(config), config)
