"""The strategies' options, one group per strategy or wrapper, declared once.

Kept apart from the strategy modules so that ``--help`` and the option checks never
import Flower's strategies; each group names the module that reads it.
"""

from __future__ import annotations

from fl_core.federation import FederationOptions
from fl_core.options import (
    OptionError,
    Options,
    Settings,
    at_least,
    fraction,
    group,
    one_of,
    option,
    positive,
    unit_interval,
)

CLIPPING_SIDES = ("server", "client")
CLIP_MODES = ("fixed", "adaptive")


@group("Client sampling")
class SamplingOptions(Options):
    """How many clients each round samples (:mod:`strategies.sampling`)."""

    fraction_train: float = option(1.0, "fraction of clients sampled to train each round",
                                   check=fraction)
    fraction_evaluate: float = option(1.0, "fraction of clients sampled to evaluate each "
                                      "round", check=fraction)
    clients_per_round: int = option(0, "clients sampled per round, train and evaluate "
                                    "(0: use --fraction-*)", check=at_least(0))

    def validate(self, settings: Settings) -> None:
        """At most ``--clients`` clients can be sampled."""
        clients = settings.get(FederationOptions).clients
        if self.clients_per_round > clients:
            raise OptionError("clients-per-round",
                              f"must be <= --clients ({clients}), got {self.clients_per_round}")


@group("FedProx")
class FedProxOptions(Options):
    """``--strategy fedprox`` (:mod:`strategies.fedprox`)."""

    proximal_mu: float = option(0.1, "FedProx proximal term weight mu", check=at_least(0))


@group("FedAdam")
class FedAdamOptions(Options):
    """``--strategy fedadam`` (:mod:`strategies.fedadam`)."""

    server_lr: float = option(0.1, "FedAdam server learning rate (eta)", check=positive)
    adam_beta1: float = option(0.9, "FedAdam first-moment decay", check=unit_interval)
    adam_beta2: float = option(0.99, "FedAdam second-moment decay", check=unit_interval)
    adam_tau: float = option(0.001, "FedAdam adaptivity (epsilon in the denominator)",
                             check=positive)


@group("Secure aggregation (SecAgg+)")
class SecAggOptions(Options):
    """``--secagg`` (:mod:`strategies.secagg`)."""

    secagg: bool = option(False, "secure aggregation (Flower's SecAgg+): the server sees "
                          "only the sum")
    secagg_shares: int = option(0, "SecAgg+ key shares per client (0: all clients of the "
                                "round)", check=at_least(0))
    secagg_threshold: int = option(0, "SecAgg+ shares needed to rebuild a key (0: shares "
                                   "// 2 + 1)", check=at_least(0))

    def shares_and_threshold(self, settings: Settings) -> tuple[int, int]:
        """(shares, threshold) with their defaults resolved: all sampled, a majority."""
        from strategies.sampling import train_sample_size

        shares = self.secagg_shares or train_sample_size(settings)
        return shares, self.secagg_threshold or shares // 2 + 1

    def validate(self, settings: Settings) -> None:
        """SecAgg+ needs >= 3 clients a round, 3 <= shares <= clients, 2 <= threshold < shares."""
        if not self.secagg:
            return
        from strategies.sampling import train_sample_size

        sampled = train_sample_size(settings)
        if sampled < 3:
            raise OptionError("clients-per-round",
                              f"--secagg needs at least 3 clients per round (got {sampled})")
        if self.secagg_shares and not 3 <= self.secagg_shares <= sampled:
            raise OptionError("secagg-shares", f"must be 0 or in 3..{sampled} (clients per "
                              f"round), got {self.secagg_shares}")
        shares, threshold = self.shares_and_threshold(settings)
        if not 2 <= threshold < shares:
            raise OptionError("secagg-threshold", f"must be 0 or in 2..{shares - 1} (below "
                              f"--secagg-shares {shares}), got {threshold}")
        dp = settings.get(DPFedAvgOptions)
        if settings.strategy == "dp-fedavg" and (dp.dp_clipping, dp.dp_clip) != ("client",
                                                                                 "fixed"):
            raise OptionError(
                "secagg",
                "with dp-fedavg needs --dp-clipping client --dp-clip fixed (the server never "
                "sees single updates to clip, and adaptive clipping's per-client bits would "
                "travel in clear)",
            )


HE_POLY_DEGREES = (8192, 16384)


def _poly_degree(v: object) -> str | None:
    if v in HE_POLY_DEGREES:
        return None
    return f"unknown value {v!r}; allowed: {', '.join(map(str, HE_POLY_DEGREES))}"


_poly_degree.allowed = [str(d) for d in HE_POLY_DEGREES]  # type: ignore[attr-defined]


@group("Homomorphic encryption (CKKS, TenSEAL)")
class HEOptions(Options):
    """``--he`` (:mod:`strategies.he`)."""

    he: bool = option(False, "FedAvg over CKKS ciphertexts: the server adds encrypted updates "
                      "and sees only the decrypted sum")
    he_poly_degree: int = option(8192, "CKKS polynomial degree, 128-bit secure (16384: more "
                                 "headroom, twice the bytes)", check=_poly_degree)
    he_keys: str = option("", "folder holding the federation's CKKS keys; provisioned per run "
                          "by the fl_sim CLI", hidden=True)

    def validate(self, settings: Settings) -> None:
        """Refuse what cannot run over ciphertexts, and a missing TenSEAL."""
        if not self.he:
            return
        import importlib.util

        if importlib.util.find_spec("tenseal") is None:
            raise OptionError("he", "needs TenSEAL (pip install tenseal==0.3.18)")
        if settings.get(SecAggOptions).secagg:
            raise OptionError("he", "and --secagg are two ways to hide single updates; "
                              "choose one")
        if settings.strategy not in ("fedavg", "fedprox", "dp-fedavg"):
            raise OptionError("he", f"works with fedavg, fedprox and dp-fedavg, not "
                              f"{settings.strategy} (its server step needs the plain average)")
        dp = settings.get(DPFedAvgOptions)
        if settings.strategy == "dp-fedavg" and (dp.dp_clipping, dp.dp_clip) != ("client",
                                                                                 "fixed"):
            raise OptionError("he", "with dp-fedavg needs --dp-clipping client --dp-clip fixed "
                              "(the server cannot clip or count ciphertexts)")


@group("DP-FedAvg (client-level DP)")
class DPFedAvgOptions(Options):
    """``--strategy dp-fedavg`` (:mod:`strategies.dp`)."""

    dp_clipping: str = option("server", "dp-fedavg: where updates are clipped",
                              check=one_of(CLIPPING_SIDES))
    dp_clip: str = option("fixed", "dp-fedavg: clipping norm fixed or adapted each round",
                          check=one_of(CLIP_MODES))
    clipping_norm: float = option(1.0, "dp-fedavg fixed clipping norm", check=positive)
    server_noise_multiplier: float = option(
        1.0, "dp-fedavg noise multiplier z (server noise std = z * clip / sampled clients)",
        check=at_least(0))
    initial_clipping_norm: float = option(0.1, "dp-fedavg adaptive: clipping norm of round 1",
                                          check=positive)
    target_quantile: float = option(0.5, "dp-fedavg adaptive: quantile of the update norms "
                                    "the clip tracks (share left unclipped)",
                                    check=unit_interval)
    clip_lr: float = option(0.2, "dp-fedavg adaptive: clipping-norm learning rate",
                            check=positive)
    clipped_count_stddev: float = option(0.0, "dp-fedavg adaptive: noise std of the clipped "
                                         "count (0: Flower's sampled/20)", check=at_least(0))
    max_epsilon: float = option(0.0, "client-level budget: stop before a round that would "
                                "exceed it (0: none)", check=at_least(0))

    def validate(self, settings: Settings) -> None:
        """Refuse what Flower would reject mid-run or what cannot be accounted."""
        dp = settings.strategy == "dp-fedavg"
        noise = self.server_noise_multiplier
        if self.max_epsilon > 0 and not dp:
            raise OptionError("max-epsilon", "a client-level budget needs --strategy dp-fedavg")
        if not dp:
            return
        if self.max_epsilon > 0 and noise == 0:
            raise OptionError("max-epsilon", "needs --server-noise-multiplier > 0 (without "
                              "noise epsilon is infinite)")
        if self.dp_clip == "adaptive":
            if noise == 0:
                raise OptionError(
                    "server-noise-multiplier",
                    "adaptive clipping needs a noise multiplier > 0 (got 0); use --dp-clip "
                    "fixed to clip without noise",
                )
            from strategies.sampling import train_sample_size

            sampled = train_sample_size(settings)
            stddev = self.clipped_count_stddev or sampled / 20
            if noise >= 2 * stddev:
                raise OptionError(
                    "server-noise-multiplier",
                    f"adaptive clipping needs it < 2 x clipped-count noise std ({2 * stddev:g} "
                    f"with {sampled} sampled clients); lower it or raise "
                    "--clipped-count-stddev",
                )


@group("Replies and quorum")
class QuorumOptions(Options):
    """What makes a round (:mod:`strategies.quorum`)."""

    min_replies: int = option(1, "fewest successful train replies that make a round; fewer: "
                              "round skipped", check=at_least(1))

    def validate(self, settings: Settings) -> None:
        """A quorum larger than the clients sampled per round could never be met."""
        from strategies.sampling import train_sample_size

        sampled = train_sample_size(settings)
        if self.min_replies > sampled:
            raise OptionError(
                "min-replies", f"must be <= the {sampled} clients sampled per round "
                f"(--clients-per-round, or --clients x --fraction-train), got {self.min_replies}")
