"""The strategies, by ``--strategy`` name: builders ``(settings) -> Strategy``.

Explicit on purpose: listing the names imports no strategy module, so ``--help`` stays
light. Adding a strategy is one entry below plus its module (see docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Mapping

from fl_core.options import Options, Settings
from fl_core.registry import Registry
from strategies.options import DPFedAvgOptions, FedAdamOptions, FedProxOptions, HEOptions

STRATEGIES = Registry("strategy", {
    "dp-fedavg": "strategies.dp:build_dp_fedavg",
    "fedadam": "strategies.fedadam:build_fedadam",
    "fedavg": "strategies.fedavg:build_fedavg",
    "fedprox": "strategies.fedprox:build_fedprox",
})

GROUPS: Mapping[str, tuple[type[Options], ...]] = {
    "dp-fedavg": (DPFedAvgOptions,),
    "fedadam": (FedAdamOptions,),
    "fedavg": (),
    "fedprox": (FedProxOptions,),
}
"""The option groups each strategy reads beyond sampling, SecAgg+ and the quorum."""

names = STRATEGIES.names
get = STRATEGIES.get


def build(settings: Settings):
    """Build the strategy ``settings`` name, unwrapped."""
    return get(settings.strategy)(settings)


def build_for_run(settings: Settings):
    """The strategy a run uses: :func:`build` plus the run's wrappers.

    :class:`strategies.quorum.Quorum` sits directly around the aggregating strategy, so it
    counts the replies that strategy really aggregates (under SecAgg+ those arrive through
    the protocol, not the default round loop); SecAgg+ wraps outside when ``secagg``.
    With ``he`` the model is aggregated over ciphertexts (:mod:`strategies.he`), inside
    the DP wrapper under dp-fedavg, so the noise is added to the encrypted sum.
    """
    from strategies.options import QuorumOptions
    from strategies.quorum import Quorum
    from strategies.secagg import wrap_if_asked

    strategy = build(settings)
    if settings.get(HEOptions).he and settings.strategy != "dp-fedavg":  # dp-fedavg: inside
        from strategies import he

        strategy = he.wrap(strategy, settings, "num-examples")
    strategy = Quorum(strategy, settings.get(QuorumOptions).min_replies)
    return wrap_if_asked(strategy, settings)
