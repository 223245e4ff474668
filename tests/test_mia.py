"""Membership-inference statistics (fl_sim.release.mia) against figures worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fl_sim.release import mia


def test_auc_of_a_hand_made_score_list() -> None:
    # pairs (member, non-member): 3>0, 3>2, 2>0, 2=2 (1/2), 1>0, 1<2  ->  4.5 / 6
    assert mia.auc([3, 2, 1], [0, 2]) == pytest.approx(0.75)
    assert mia.auc([5, 6], [1, 2]) == 1.0
    assert mia.auc([1, 2], [5, 6]) == 0.0


def test_tpr_at_1pct_fpr_of_a_hand_built_case() -> None:
    nonmembers = np.arange(200.0)                      # 0..199, 1% = 2 false positives
    members = np.concatenate([1000 + np.arange(50.0),  # above every non-member
                              np.full(50, 196.5)])     # needs 3 false positives (1.5%)
    tpr, threshold = mia.tpr_at_fpr(members, nonmembers, 0.01)
    assert tpr == 0.5
    assert threshold > 199
    tpr, _ = mia.tpr_at_fpr(members, nonmembers, 0.015)
    assert tpr == 1.0


@pytest.mark.parametrize(("k", "n", "low", "high"), [
    (5, 10, 0.187086, 0.812914),      # textbook exact interval for 5 of 10
    (1, 10, 0.002529, 0.445016),      # 1 - 0.975**(1/10) .. table value
    (0, 10, 0.0, 1 - 0.025 ** 0.1),   # k = 0: closed form upper end
    (10, 10, 0.025 ** 0.1, 1.0),      # k = n: closed form lower end
])
def test_clopper_pearson_against_hand_values(k: int, n: int, low: float, high: float) -> None:
    got = mia.clopper_pearson(k, n)
    assert got == pytest.approx((low, high), abs=2e-6)
    vector = mia.clopper_pearson_bounds(np.array([k]), n)
    assert (vector[0][0], vector[1][0]) == pytest.approx(got, abs=1e-12)


def test_epsilon_from_rates_by_hand() -> None:
    assert mia.epsilon_from_rates(0.9, 0.1, 0.0) == pytest.approx(math.log(9))
    # ln((0.5 - 1e-5) / 0.01) = 3.912003 beats ln((0.99 - 1e-5) / 0.5) = 0.683077
    assert mia.epsilon_from_rates(0.5, 0.01, 1e-5) == pytest.approx(3.912003, abs=1e-6)
    # the complement test dominates: ln((1 - 0.5) / (1 - 0.99)) = ln 50 > ln(0.99 / 0.5)
    assert mia.epsilon_from_rates(0.99, 0.5, 0.0) == pytest.approx(math.log(50))
    assert mia.epsilon_from_rates(0.01, 0.5, 0.0) == 0.0  # worse than chance: no evidence
    assert mia.epsilon_from_rates(0.3, 0.3, 1e-5) == 0.0
    assert mia.epsilon_from_rates(0.5, 0.0, 1e-5) == math.inf
    # delta absorbs a TPR at or below it
    assert mia.epsilon_from_rates(1e-5, 0.0, 1e-5) == 0.0


def test_perfect_attack_bound_is_capped_near_ln_n() -> None:
    """With n examples per half the bound cannot exceed about ln(n / ln(40))."""
    bound = mia.empirical_epsilon(np.ones(1000), np.zeros(1000), 1e-5, seed=0)
    assert bound.tpr == 1.0 and bound.fpr == 0.0
    p = 0.025 ** (1 / 500)  # Clopper-Pearson ends for 500 of 500 and 0 of 500
    assert bound.lower == pytest.approx(math.log((p - 1e-5) / (1 - p)), rel=1e-6)
    assert 4.5 < bound.lower < math.log(500)
    assert math.isinf(bound.point) and bound.as_json()["point"] is None


def test_random_guessing_gives_auc_near_half_and_no_epsilon() -> None:
    """iid scores for both sides: the attack is a coin flip.

    With n = 2000 per side the AUC's null standard deviation is
    sqrt((2n + 1) / (12 n^2)) = 0.0091, so 0.04 is over 4 sigma. The bound holds with 95%
    confidence per seed, so over 20 seeds a positive lower bound may appear about once.
    """
    positives = 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        members, nonmembers = rng.normal(size=2000), rng.normal(size=2000)
        assert abs(mia.auc(members, nonmembers) - 0.5) < 0.04
        bound = mia.empirical_epsilon(members, nonmembers, 1e-5, seed=seed)
        positives += bound.lower > 0
        assert bound.lower < 0.2
    assert positives <= 3


def test_a_separable_attack_gets_a_large_bound() -> None:
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(3.0, 1.0, 1000), rng.normal(0.0, 1.0, 1000)
    summary = mia.attack_summary(members, nonmembers, 1e-5, seed=0)
    assert summary["auc"] > 0.95
    assert summary["tpr_at_1pct_fpr"] > 0.3
    low, high = summary["eps_lower_bound_ci"]
    assert 1.5 < low == summary["eps_lower_bound"]
    assert high is None or high >= low
    assert len(summary["roc"]) <= mia.ROC_POINTS + 2
    assert summary["roc"][0] == [0.0, 0.0] and summary["roc"][-1] == [1.0, 1.0]


def test_threshold_is_chosen_on_the_other_half() -> None:
    """The bound's rates are counted on half the examples, not all of them."""
    rng = np.random.default_rng(1)
    bound = mia.empirical_epsilon(rng.normal(1, 1, 301), rng.normal(0, 1, 200), 1e-5, seed=3)
    assert (bound.members, bound.nonmembers) == (151, 100)


def test_nearest_distances_match_brute_force() -> None:
    rng = np.random.default_rng(2)
    queries, references = rng.random((37, 1, 4, 4)), rng.random((53, 1, 4, 4))
    brute = np.sqrt(((queries.reshape(37, 1, -1) - references.reshape(1, 53, -1)) ** 2)
                    .sum(-1)).min(1)
    got = mia.nearest_distances(queries, references, chunk=8)
    assert got == pytest.approx(brute, abs=1e-5)
    # a query that is one of the references is at distance 0
    assert mia.nearest_distances(references[:3], references)[0] == pytest.approx(0, abs=1e-3)


def test_nearest_distances_by_class_uses_the_same_label() -> None:
    references = np.array([[0.0], [10.0]])
    labels = np.array([0, 1])
    got = mia.nearest_distances_by_class(np.array([[9.0], [9.0]]), np.array([0, 1]),
                                         references, labels)
    assert got == pytest.approx([9.0, 1.0])
