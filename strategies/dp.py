"""DP-FedAvg: Flower's central-DP wrappers around FedAvg, with client-level accounting.

Clipping and noise are Flower's (``DifferentialPrivacy{Server,Client}Side{Fixed,Adaptive}
Clipping``; the adaptive ones with Andrew et al.'s clip update,
:mod:`strategies.adaptive_clipping`); this module chooses the wrapper, gives it an
accountant and wraps it in :class:`ClientLevelDP`, which reports each round's privacy
state and enforces a budget.

Accounting (see docs/privacy-guarantees.md):

* fixed clipping: Flower's own accounted mode, an RDP accountant on Google's
  ``dp-accounting`` with the conditions Flower documents: no sampling amplification,
  add-or-remove-one-client neighbours, uniform FedAvg weights (clients add a constant
  ``dp-weight`` metric, :mod:`fl_sim.app.client_mods`), exactly ``sampled`` replies.
* adaptive clipping: Flower does not account it; the same RDP accountant composes one
  Gaussian event per released round whose noise multiplier we derive from what the
  wrapper actually did that round (:func:`adaptive_round_multiplier`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.exception import PrivacyBudgetExhausted
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    Strategy,
)

from fl_core.federation import FederationOptions
from fl_core.flower import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    RdpAccountant,
    SamplingMethod,
)
from fl_core.options import Settings
from strategies.adaptive_clipping import ClientSideAdaptiveClipping, ServerSideAdaptiveClipping
from strategies.delegating import DelegatingStrategy
from strategies.fedavg import fedavg_kwargs
from strategies.options import DPFedAvgOptions, HEOptions
from strategies.sampling import train_sample_size

UNIFORM_WEIGHT = "dp-weight"
"""Metric every client adds under dp-fedavg (always 1): FedAvg then averages uniformly,
which the sensitivity ``clip / sampled`` and Flower's accounted mode require."""

NEIGHBOURS = NeighboringRelation.ADD_OR_REMOVE_ONE
SAMPLING = SamplingMethod.NO_AMPLIFICATION

FLOWER_ACCOUNTED = "flower-rdp"
SELF_ACCOUNTED = "fl-sim-rdp"
UNACCOUNTED = "none"


def privacy_config(settings: Settings) -> PrivacyConfig:
    """The accounting model of a run: population ``clients``, ``delta``, optional budget."""
    budget = settings.get(DPFedAvgOptions).max_epsilon
    federation = settings.get(FederationOptions)
    return PrivacyConfig(
        target_delta=federation.delta,
        population_size=federation.clients,
        neighboring_relation=NEIGHBOURS,
        sampling_method=SAMPLING,
        max_epsilon=budget if budget > 0 else None,
    )


def adaptive_round_multiplier(
    update_multiplier: float, clipped_count_stddev: float, clip_used: float, clip_noised: float,
    replied_share: float = 1.0,
) -> float:
    """Noise multiplier of one round of Flower's adaptive clipping, as released.

    Two Gaussian queries are released: the sum of updates clipped at ``clip_used``
    (sensitivity ``clip_used``) with noise std ``update_multiplier * clip_noised``, and
    the count of clipped updates (sensitivity 1 under add-or-remove-one) with std
    ``clipped_count_stddev``. Flower noises the sum with the clip *after* its geometric
    update (``clip_noised``), so the sum's effective multiplier is
    ``update_multiplier * clip_noised / clip_used``. Flower sizes that noise for all
    sampled clients but averages over those that replied (adaptive mode does not insist
    on every reply), so a round with ``replied_share`` < 1 is charged proportionally less
    noise. Two Gaussians compose (in RDP) like one with ``z = (z_sum^-2 + z_count^-2)^-1/2``.

    Flower splits its nominal ``noise_multiplier`` assuming the count has sensitivity 1/2
    (Andrew et al.'s centred bits); it noises the plain count, so this is stricter.
    """
    z_sum = update_multiplier * clip_noised / clip_used * replied_share
    return (z_sum ** -2 + clipped_count_stddev ** -2) ** -0.5


class ClientLevelDP(DelegatingStrategy):
    """Delegate to one of Flower's DP wrappers; report privacy per round; keep a budget.

    Parameters
    ----------
    dp_strategy : Strategy
        A Flower ``DifferentialPrivacy*Clipping`` wrapper around FedAvg.
    accountant : RdpAccountant or None
        Flower's RDP accountant. For fixed clipping it is the wrapper's own (the wrapper
        composes); for adaptive clipping this class composes; None: no noise, no account.
    sampled : int
        Clients sampled per round (the wrapper's ``num_sampled_clients``).
    accounted_by : str
        ``flower-rdp``, ``fl-sim-rdp`` or ``none``: written in privacy.csv.
    """

    def __init__(
        self,
        dp_strategy: Strategy,
        accountant: RdpAccountant | None,
        sampled: int,
        accounted_by: str,
    ) -> None:
        super().__init__(dp_strategy)
        self.accountant = accountant
        self.sampled = sampled
        self.accounted_by = accounted_by
        self.adaptive = isinstance(
            dp_strategy,
            (DifferentialPrivacyServerSideAdaptiveClipping,
             DifferentialPrivacyClientSideAdaptiveClipping),
        )
        self._clip_used: float = float(dp_strategy.clipping_norm)
        self._rows: dict[int, dict[str, Any]] = {}
        self.stop: dict[str, Any] | None = None

    # --- accounting ---------------------------------------------------------------
    @property
    def population(self) -> int:
        """Clients the accountant treats as the population (``--clients``)."""
        return self.accountant.config.population_size if self.accountant else 0

    def epsilon(self) -> float:
        """Cumulative client-level epsilon at the run's delta (inf without noise)."""
        if self.accountant is None:
            return math.inf
        if self.accountant.num_releases == 0:
            return 0.0
        return self.accountant.get_epsilon(self.accountant.config.target_delta)

    def nominal_multiplier(self) -> float:
        """Noise multiplier a round is charged before it runs (adaptive: clip unchanged)."""
        if self.adaptive:
            return adaptive_round_multiplier(
                self.strategy.noise_multiplier, self.strategy.clipped_count_stddev, 1.0, 1.0
            )
        return float(self.strategy.noise_multiplier)

    def _event(self, multiplier: float) -> GaussianPrivacyEvent:
        return GaussianPrivacyEvent(multiplier, self.sampled, self.population)

    def _projected_epsilon(self, event: GaussianPrivacyEvent) -> float:
        projected = RdpAccountant(self.accountant.config)
        projected.load_state_dict(self.accountant.state_dict())
        projected.compose(event)
        return projected.get_epsilon(self.accountant.config.target_delta)

    def privacy_row(self, server_round: int) -> dict[str, Any]:
        """The privacy.csv row of ``server_round`` (without ``run_id``)."""
        return self._rows.get(server_round) or self._row(server_round, "no-round")

    def _row(self, server_round: int, status: str, multiplier: float | None = None,
             replies: int | None = None) -> dict[str, Any]:
        delta = self.accountant.config.target_delta if self.accountant else ""
        return {
            "round": server_round,
            "epsilon": self.epsilon(),
            "delta": delta,
            "noise_multiplier": self.nominal_multiplier() if multiplier is None else multiplier,
            "clipping_norm": self._clip_used,
            "sampled_clients": self.sampled if replies is None else replies,
            "population": self.population,
            "accountant": self.accounted_by,
            "status": status,
        }

    # --- checkpoint/resume (fl_sim.checkpoint) --------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: the accountant's ledger and the clipping norm in force.

        Without it a resumed run's client-level epsilon would restart at zero.
        """
        return {
            "accountant": self.accountant.state_dict() if self.accountant else None,
            "clipping_norm": float(self.strategy.clipping_norm),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (adaptive clipping resumes at the norm it reached)."""
        if self.accountant is not None and state.get("accountant"):
            self.accountant.load_state_dict(dict(state["accountant"]))
        self.strategy.clipping_norm = float(state["clipping_norm"])
        self._clip_used = float(state["clipping_norm"])

    # --- Strategy -----------------------------------------------------------------

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Refuse a round that would exceed ``--max-epsilon``; else configure it."""
        budget = self.accountant.config.max_epsilon if self.accountant else None
        if budget is not None:
            event = self._event(self.nominal_multiplier())
            if self.accountant.would_exceed(event):
                projected = self._projected_epsilon(event)
                self.stop = {
                    "round": server_round,
                    "epsilon": self.epsilon(),
                    "projected_epsilon": projected,
                    "max_epsilon": budget,
                }
                self._rows[server_round] = self._row(server_round, "budget-exhausted")
                raise PrivacyBudgetExhausted(
                    f"round {server_round} would raise client-level epsilon from "
                    f"{self.epsilon():.4g} to {projected:.4g} > --max-epsilon {budget:g} "
                    f"(delta {self.accountant.config.target_delta:g})"
                )
        self._clip_used = float(self.strategy.clipping_norm)
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate with clipping and noise (Flower's); account the release."""
        replies = list(replies)
        released_before = self.accountant.num_releases if self.accountant else 0
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        multiplier = None
        ok = sum(not reply.has_error() for reply in replies)
        if arrays is not None and self.adaptive:
            multiplier = adaptive_round_multiplier(
                self.strategy.noise_multiplier, self.strategy.clipped_count_stddev,
                self._clip_used, float(self.strategy.clipping_norm), ok / self.sampled,
            )
            self.accountant.compose(self._event(multiplier))
        released = arrays is not None and (
            self.accountant is None or self.accountant.num_releases > released_before
        )
        self._rows[server_round] = self._row(
            server_round, "released" if released else "no-release", multiplier, ok
        )
        return arrays, metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Evaluation is not a private release here (metrics are not accounted)."""
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)


WRAPPERS = {
    ("server", "fixed"): DifferentialPrivacyServerSideFixedClipping,
    ("client", "fixed"): DifferentialPrivacyClientSideFixedClipping,
    ("server", "adaptive"): ServerSideAdaptiveClipping,
    ("client", "adaptive"): ClientSideAdaptiveClipping,
}


def build_dp_fedavg(settings: Settings) -> ClientLevelDP:
    """FedAvg (uniform weights) inside the Flower DP wrapper the settings name.

    ``--dp-clipping client`` needs the matching client mod, which
    :mod:`fl_sim.app.client_mods` installs from the run config.
    """
    options = settings.get(DPFedAvgOptions)
    inner = FedAvg(**fedavg_kwargs(settings), weighted_by_key=UNIFORM_WEIGHT)
    sampled = train_sample_size(settings)
    noise = options.server_noise_multiplier
    wrapper = WRAPPERS[(options.dp_clipping, options.dp_clip)]
    if options.dp_clip == "fixed":
        accountant = RdpAccountant(privacy_config(settings)) if noise > 0 else None
        if settings.get(HEOptions).he:  # client-side only (checked): noise the encrypted sum
            from strategies import he

            inner = he.wrap(inner, settings, UNIFORM_WEIGHT)
            wrapper = he.EncryptedNoiseClientSideFixedClipping
        dp = wrapper(inner, noise, options.clipping_norm, sampled, accountant=accountant)
        return ClientLevelDP(dp, accountant, sampled,
                             FLOWER_ACCOUNTED if accountant else UNACCOUNTED)
    dp = wrapper(
        inner, noise, sampled,
        initial_clipping_norm=options.initial_clipping_norm,
        target_clipped_quantile=options.target_quantile,
        clip_norm_lr=options.clip_lr,
        clipped_count_stddev=options.clipped_count_stddev or None,
    )
    return ClientLevelDP(dp, RdpAccountant(privacy_config(settings)), sampled, SELF_ACCOUNTED)
