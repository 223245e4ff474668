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
    """Build the strategy named by ``config["strategy"]`` from the run config, unwrapped."""
    return get(str(config["strategy"]))(config)


def build_for_run(config: Mapping[str, Any]) -> Strategy:
    """The strategy a run uses: :func:`build` plus the run's wrappers.

    :class:`strategies.quorum.Quorum` sits directly around the aggregating strategy, so it
    counts the replies that strategy really aggregates (under SecAgg+ those arrive through
    the protocol, not the default round loop); SecAgg+ wraps outside when ``secagg``.
    """
    from strategies.quorum import Quorum
    from strategies.secagg import wrap_if_asked

    strategy = Quorum(build(config), int(config.get("min-replies", 1)))
    return wrap_if_asked(strategy, config)
