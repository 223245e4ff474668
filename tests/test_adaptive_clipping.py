"""Adaptive clipping follows Andrew et al. (NeurIPS 2021): C tracks a quantile of norms.

Clients here send updates of known norms (1, 2, ..., 10), so the quantile C should reach
is known. The same rounds through Flower 1.42's own classes show the inverted update that
:mod:`strategies.adaptive_clipping` corrects (docs/upstream/flower-adaptive-clipping.md).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    FedAvg,
)

from fl_sim.options import RunConfig
from strategies import registry
from strategies.adaptive_clipping import (
    ClientSideAdaptiveClipping,
    ServerSideAdaptiveClipping,
    next_clipping_norm,
)
from tests.fakes import FakeGrid, arrays, task_identity

NORMS = np.arange(1.0, 11.0)  # client k's update has norm k + 1: median 5.5
CLIENTS = len(NORMS)
SMALL_COUNT_NOISE = 0.1  # std of the clipped count; the noise multiplier must stay below 0.2


@pytest.fixture(autouse=True)
def _identity():
    task_identity()
    np.random.seed(0)


def build(side: str, fixed: bool, initial: float, lr: float = 0.2, target: float = 0.5):
    classes = {
        ("server", True): ServerSideAdaptiveClipping,
        ("client", True): ClientSideAdaptiveClipping,
        ("server", False): DifferentialPrivacyServerSideAdaptiveClipping,
        ("client", False): DifferentialPrivacyClientSideAdaptiveClipping,
    }
    inner = FedAvg(fraction_train=1.0, min_train_nodes=CLIENTS, min_available_nodes=CLIENTS,
                   weighted_by_key="dp-weight")
    return classes[(side, fixed)](
        inner, 0.1, CLIENTS, initial_clipping_norm=initial, target_clipped_quantile=target,
        clip_norm_lr=lr, clipped_count_stddev=SMALL_COUNT_NOISE,
    )


def one_round(strategy, server_round: int) -> float:
    """Clients 0..9 send updates of norm 1..10 (client side: clipped by the mod's rule)."""
    current = arrays(np.zeros(2))
    messages = list(strategy.configure_train(server_round, current, ConfigRecord(),
                                             FakeGrid(CLIENTS)))
    replies = []
    for index, message in enumerate(messages):
        norm = NORMS[index]
        metrics = {"num-examples": 10, "dp-weight": 1.0}
        update = np.array([norm, 0.0])
        if "clipping_norm" in message.content["config"]:  # client side: the client clips
            clip = float(message.content["config"]["clipping_norm"])
            metrics["norm_bit"] = int(norm > clip)  # Flower's bit: 1 if it was clipped
            update *= min(1.0, clip / norm)
        content = RecordDict({"arrays": arrays(update), "metrics": MetricRecord(metrics)})
        replies.append(Message(content, reply_to=message))
    strategy.aggregate_train(server_round, replies)
    return float(strategy.clipping_norm)


def trajectory(strategy, rounds: int) -> list[float]:
    return [float(strategy.clipping_norm)] + [one_round(strategy, r) for r in
                                              range(1, rounds + 1)]


def test_step_is_andrew_et_al_update_rule():
    # C * exp(-lr * (unclipped - target)): every update clipped -> unclipped share 0.
    assert next_clipping_norm(1.0, 1.0, 0.5, 0.2) == pytest.approx(math.exp(0.1))
    assert next_clipping_norm(1.0, 0.0, 0.5, 0.2) == pytest.approx(math.exp(-0.1))
    assert next_clipping_norm(2.0, 0.5, 0.5, 0.7) == pytest.approx(2.0)
    assert next_clipping_norm(1.0, 0.25, 0.9, 1.0) == pytest.approx(math.exp(0.15))


@pytest.mark.parametrize("side", ["server", "client"])
def test_clip_far_below_every_norm_grows_each_round(side):
    clips = trajectory(build(side, True, initial=0.01), 8)
    assert all(b > a for a, b in zip(clips, clips[1:]))
    # every update clipped: about exp(lr * target) = exp(0.1) per round
    assert clips[-1] / clips[0] == pytest.approx(math.exp(0.8), rel=0.05)


@pytest.mark.parametrize("side", ["server", "client"])
def test_clip_far_above_every_norm_shrinks_each_round(side):
    clips = trajectory(build(side, True, initial=1000.0), 8)
    assert all(b < a for a, b in zip(clips, clips[1:]))
    assert clips[-1] / clips[0] == pytest.approx(math.exp(-0.8), rel=0.05)


@pytest.mark.parametrize("side", ["server", "client"])
def test_clip_converges_to_the_median_norm_within_30_rounds(side):
    clips = trajectory(build(side, True, initial=0.1, lr=0.5), 30)
    median = float(np.median(NORMS))
    assert all(abs(c - median) / median < 0.2 for c in clips[-5:]), clips


@pytest.mark.parametrize("side", ["server", "client"])
def test_clip_tracks_other_quantiles(side):
    # target 0.9: C settles between the 9th and 10th norm, leaving 9 of 10 unclipped.
    clips = trajectory(build(side, True, initial=1.0, lr=0.5, target=0.9), 30)
    assert all(9.0 <= c <= 10.0 * 1.05 for c in clips[-5:]), clips


@pytest.mark.parametrize("side", ["server", "client"])
def test_flower_142_update_runs_away_from_the_quantile(side):
    # The upstream defect (reproduction in docs/upstream/flower-adaptive-clipping.md):
    # from below every norm Flower's C shrinks, from above it grows.
    low = trajectory(build(side, False, initial=0.1), 50)
    high = trajectory(build(side, False, initial=1000.0), 10)
    assert low[-1] < low[0] / 100 and high[-1] > high[0]


def test_fix_keeps_flowers_noise_split_and_count_noise():
    ours, flowers = build("server", True, 0.1), build("server", False, 0.1)
    assert ours.noise_multiplier == flowers.noise_multiplier
    assert ours.clipped_count_stddev == flowers.clipped_count_stddev == SMALL_COUNT_NOISE


@pytest.mark.parametrize("side", ["server", "client"])
def test_dp_fedavg_adaptive_is_the_corrected_wrapper(side):
    strategy = registry.build(RunConfig.from_mapping({
        "strategy": "dp-fedavg", "dp-clip": "adaptive", "dp-clipping": side,
        "clients": 20, "clients-per-round": 5, "server-noise-multiplier": 0.4,
    }))
    wanted = ServerSideAdaptiveClipping if side == "server" else ClientSideAdaptiveClipping
    assert type(strategy.strategy) is wanted
    assert strategy.accounted_by == "fl-sim-rdp"


def test_the_fix_leaves_the_accounting_of_a_released_round_unchanged():
    """With the clip held still (a vanishing learning rate), Flower's update and the corrected
    one release the same noise, and the accountant charges them the same epsilon."""
    from fl_core.flower import RdpAccountant
    from strategies.dp import ClientLevelDP, privacy_config

    config = RunConfig.from_mapping({"strategy": "dp-fedavg", "dp-clip": "adaptive",
                                     "clients": CLIENTS, "server-noise-multiplier": 0.1,
                                     "clipped-count-stddev": SMALL_COUNT_NOISE})
    epsilons = {}
    for fixed in (True, False):
        np.random.seed(0)
        inner = build("server", fixed, initial=5.5, lr=1e-12)
        strategy = ClientLevelDP(inner, RdpAccountant(privacy_config(config)), CLIENTS,
                                 "fl-sim-rdp")
        for server_round in (1, 2, 3):
            one_round(strategy, server_round)
        epsilons[fixed] = strategy.privacy_row(3)["epsilon"]
    assert epsilons[True] == pytest.approx(epsilons[False], rel=1e-9)
    assert 0 < epsilons[True] < float("inf")
