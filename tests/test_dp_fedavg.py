"""DP-FedAvg against independent figures: noise std, client-level epsilon, budget stop.

The strategies are the real Flower wrappers built by ``strategies.dp``; the rounds run
in-process on a fake grid (tests/fakes.py), so these tests are fast.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting import dp_event, rdp
from flwr.serverapp.exception import PrivacyBudgetExhausted
from scipy.optimize import brentq
from scipy.stats import norm

from fl_sim.options import RunConfig
from strategies import registry
from strategies.dp import ClientLevelDP, adaptive_round_multiplier
from tests.fakes import FakeGrid, arrays, run_round, task_identity

UPDATE = arrays(np.array([0.1, 0.0, 0.0]))  # any non-zero update of a 3-element model
SIZE = 200_000  # elements of the zero update: the std estimate is good to ~0.3%


@pytest.fixture(autouse=True)
def _identity():
    task_identity()


def dp_strategy(**overrides) -> ClientLevelDP:
    settings = {"strategy": "dp-fedavg", "clients": 20, "clients-per-round": 5, **overrides}
    return registry.build(RunConfig.from_mapping(settings))


def direct_epsilon(multipliers: list[float], delta: float) -> float:
    """Client-level epsilon straight from dp-accounting: no amplification, add/remove one."""
    accountant = rdp.RdpAccountant()
    for z in multipliers:
        accountant.compose(dp_event.GaussianDpEvent(z))
    return accountant.get_epsilon(delta)


def gaussian_exact_epsilon(z: float, rounds: int, delta: float) -> float:
    """Exact epsilon of ``rounds`` Gaussian releases (Balle & Wang 2018's analytic form).

    ``rounds`` compositions of multiplier ``z`` are one Gaussian with ``mu = sqrt(T)/z``;
    any valid accountant (RDP included) must report at least this.
    """
    mu = math.sqrt(rounds) / z

    def excess(eps: float) -> float:
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta

    return brentq(excess, 0.0, 100.0)


def classic_rdp_epsilon(z: float, rounds: int, delta: float) -> float:
    """Mironov's RDP-to-DP bound for the Gaussian, minimised over alpha on a fine grid."""
    alphas = np.linspace(1.01, 200, 200_000)
    return float(np.min(rounds * alphas / (2 * z * z) + math.log(1 / delta) / (alphas - 1)))


@pytest.mark.parametrize("clipping", ["server", "client"])
def test_noise_std_on_zero_update_is_z_clip_over_sampled(clipping):
    z, clip, sampled = 1.3, 0.7, 5
    strategy = dp_strategy(**{"dp-clipping": clipping, "server-noise-multiplier": z,
                              "clipping-norm": clip, "clients-per-round": sampled})
    current = arrays(np.zeros(SIZE))
    # "Zero" update: one entry of 1e-9, because Flower's clipping divides by the update's
    # norm (see test_flower_clipping_fails_on_an_exactly_zero_update).
    tiny = np.zeros(SIZE)
    tiny[0] = 1e-9
    np.random.seed(0)
    messages, (aggregated, _) = run_round(
        strategy, 1, current, FakeGrid(20), lambda _: arrays(tiny)
    )
    assert len(messages) == sampled
    noise = aggregated.to_numpy_ndarrays()[0]
    assert abs(noise.mean()) < 5 * (z * clip / sampled) / math.sqrt(SIZE)
    assert noise.std() == pytest.approx(z * clip / sampled, rel=0.01)


def test_flower_clipping_fails_on_an_exactly_zero_update():
    # Known Flower 1.42 limitation, pinned so an upgrade that fixes it is noticed: a client
    # that returns the global model unchanged crashes server-side clipping.
    strategy = dp_strategy()
    current = arrays(np.zeros(3))
    with pytest.raises(ZeroDivisionError):
        run_round(strategy, 1, current, FakeGrid(20), lambda _: current)


def test_server_side_clipping_caps_each_update_before_averaging():
    # Five identical updates of norm 10 clipped to 1: the mean is a norm-1 update + noise.
    strategy = dp_strategy(**{"server-noise-multiplier": 1e-6, "clipping-norm": 1.0})
    current = arrays(np.zeros(4))
    update = arrays(np.array([6.0, 8.0, 0.0, 0.0]))
    _, (aggregated, _) = run_round(strategy, 1, current, FakeGrid(20), lambda _: update)
    np.testing.assert_allclose(aggregated.to_numpy_ndarrays()[0], [0.6, 0.8, 0, 0], atol=1e-4)


@pytest.mark.parametrize("z, rounds", [(1.0, 4), (0.8, 10), (2.5, 30)])
def test_fixed_clipping_epsilon_equals_direct_dp_accounting(z, rounds):
    delta = 1e-5
    strategy = dp_strategy(**{"server-noise-multiplier": z, "delta": delta})
    current = arrays(np.zeros(3))
    for server_round in range(1, rounds + 1):
        run_round(strategy, server_round, current, FakeGrid(20), lambda _: UPDATE)
    row = strategy.privacy_row(rounds)
    assert row["accountant"] == "flower-rdp" and row["status"] == "released"
    assert (row["sampled_clients"], row["population"]) == (5, 20)
    assert row["noise_multiplier"] == z and row["delta"] == delta
    assert row["epsilon"] == pytest.approx(direct_epsilon([z] * rounds, delta), rel=1e-9)
    # Independent of dp-accounting: exact Gaussian <= RDP report <= classic RDP bound.
    assert gaussian_exact_epsilon(z, rounds, delta) < row["epsilon"]
    assert row["epsilon"] <= classic_rdp_epsilon(z, rounds, delta) * 1.0001


def test_epsilon_grows_every_round_and_rows_record_clip():
    strategy = dp_strategy(**{"clipping-norm": 0.5})
    current = arrays(np.zeros(3))
    epsilons = []
    for server_round in range(1, 5):
        run_round(strategy, server_round, current, FakeGrid(20), lambda _: UPDATE)
        row = strategy.privacy_row(server_round)
        assert row["clipping_norm"] == 0.5
        epsilons.append(row["epsilon"])
    assert all(b > a for a, b in zip(epsilons, epsilons[1:]))


def test_budget_stop_before_the_round_that_would_exceed_it():
    z, budget, delta = 1.0, 8.0, 1e-5
    allowed = max(t for t in range(1, 50) if direct_epsilon([z] * t, delta) <= budget)
    assert allowed == 2  # 7.08 after two rounds, 9.01 after three
    strategy = dp_strategy(**{"server-noise-multiplier": z, "max-epsilon": budget})
    current = arrays(np.zeros(3))
    for server_round in range(1, allowed + 1):
        run_round(strategy, server_round, current, FakeGrid(20), lambda _: UPDATE)
    with pytest.raises(PrivacyBudgetExhausted, match="round 3 would raise"):
        run_round(strategy, allowed + 1, current, FakeGrid(20), lambda _: UPDATE)
    assert strategy.stop["round"] == allowed + 1
    assert strategy.stop["epsilon"] == pytest.approx(direct_epsilon([z] * allowed, delta))
    assert strategy.stop["projected_epsilon"] == pytest.approx(
        direct_epsilon([z] * (allowed + 1), delta)
    )
    assert strategy.privacy_row(allowed + 1)["status"] == "budget-exhausted"
    assert strategy.accountant.num_releases == allowed


def test_adaptive_round_multiplier_formula():
    # Equal clip before/after: the two Gaussians combine as z = (z1^-2 + z2^-2)^-1/2.
    assert adaptive_round_multiplier(3.0, 4.0, 1.0, 1.0) == pytest.approx(2.4)
    # Noise scaled with a clip that halved: the update's effective multiplier halves.
    assert adaptive_round_multiplier(3.0, 4.0, 1.0, 0.5) == pytest.approx(
        (1.5 ** -2 + 4.0 ** -2) ** -0.5
    )
    # Noise sized for 5 sampled clients, average over the 4 that replied.
    assert adaptive_round_multiplier(3.0, 4.0, 1.0, 1.0, 0.8) == pytest.approx(
        (2.4 ** -2 + 4.0 ** -2) ** -0.5
    )


def test_adaptive_clipping_accounts_each_round_as_released():
    z, stddev = 0.5, 1.0
    strategy = dp_strategy(**{"dp-clip": "adaptive", "server-noise-multiplier": z,
                              "clipped-count-stddev": stddev, "initial-clipping-norm": 0.1})
    assert strategy.accounted_by == "fl-sim-rdp"
    # Flower splits z into the update's multiplier assuming a count sensitivity of 1/2.
    z_update = strategy.strategy.noise_multiplier
    assert z_update == pytest.approx((z ** -2 - (2 * stddev) ** -2) ** -0.5)
    current = arrays(np.zeros(3))
    big = arrays(np.array([3.0, 4.0, 0.0]))  # norm 5 > clip: every update is clipped
    multipliers, clips = [], []
    for server_round in range(1, 4):
        clip_used = strategy.strategy.clipping_norm
        run_round(strategy, server_round, current, FakeGrid(20), lambda _: big)
        clip_after = strategy.strategy.clipping_norm
        row = strategy.privacy_row(server_round)
        assert row["clipping_norm"] == pytest.approx(clip_used)
        expected = ((z_update * clip_after / clip_used) ** -2 + stddev ** -2) ** -0.5
        assert row["noise_multiplier"] == pytest.approx(expected)
        multipliers.append(expected)
        clips.append(clip_used)
        assert row["epsilon"] == pytest.approx(direct_epsilon(multipliers, 1e-5), rel=1e-9)
    assert len(set(clips)) == 3  # the clip in force changes round to round


def test_no_noise_means_no_accountant_and_infinite_epsilon():
    strategy = dp_strategy(**{"server-noise-multiplier": 0.0})
    current = arrays(np.zeros(3))
    run_round(strategy, 1, current, FakeGrid(20), lambda _: UPDATE)
    row = strategy.privacy_row(1)
    assert row["accountant"] == "none" and math.isinf(row["epsilon"])


@pytest.mark.parametrize("clip", ["fixed", "adaptive"])
def test_state_dict_carries_epsilon_and_clip_into_a_resumed_strategy(clip):
    settings = {"dp-clip": clip, "server-noise-multiplier": 1.0}
    if clip == "adaptive":
        settings["clipped-count-stddev"] = 1.0
    first = dp_strategy(**settings)
    current = arrays(np.zeros(3))
    for server_round in (1, 2):
        run_round(first, server_round, current, FakeGrid(20), lambda _: UPDATE)
    resumed = dp_strategy(**settings)
    assert resumed.epsilon() == 0.0
    resumed.load_state_dict(first.state_dict())
    assert resumed.epsilon() == pytest.approx(first.epsilon(), rel=1e-12)
    assert resumed.strategy.clipping_norm == first.strategy.clipping_norm
    # One more round continues the ledger instead of restarting it. With fixed clipping
    # the round is charged the same on both; adaptive charges depend on the noisy count.
    restored = resumed.epsilon()
    run_round(first, 3, current, FakeGrid(20), lambda _: UPDATE)
    run_round(resumed, 3, current, FakeGrid(20), lambda _: UPDATE)
    assert resumed.epsilon() > restored
    if clip == "fixed":
        assert resumed.epsilon() == pytest.approx(first.epsilon(), rel=1e-9)
