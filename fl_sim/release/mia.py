"""Membership-inference statistics: attack scores in, ROC and empirical epsilon out.

Pure functions (numpy, scikit-learn, scipy, torch), no run folders: ``fl_sim.release.audit``
feeds them scores of members (training examples) and non-members (held-out examples).
The convention everywhere is *higher score = more likely a member*.

Why an empirical epsilon. An (eps, delta)-DP mechanism limits every membership test:
for any threshold, TPR <= e^eps FPR + delta and (1 - FPR) <= e^eps (1 - TPR) + delta
(Kairouz et al. 2015). A measured (TPR, FPR) pair therefore implies
``eps >= max(ln((TPR - delta) / FPR), ln((1 - delta - FPR) / (1 - TPR)))``. With finite
samples the rates are estimates, so the reported lower bound uses Clopper-Pearson
intervals, the lower end for TPR and the upper end for FPR (Jagielski et al. 2020,
Nasr et al. 2021), and the threshold is chosen on one half of the examples and measured
on the other (choosing the best of many thresholds on the same data biases it upwards).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import beta
from sklearn.metrics import roc_auc_score, roc_curve

LOW_FPR = 0.01
CONFIDENCE = 0.95
ROC_POINTS = 200


def labelled(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels 1 = member / 0 = non-member, scores) in one pair of arrays."""
    members, nonmembers = np.asarray(members, float), np.asarray(nonmembers, float)
    labels = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    return labels, np.concatenate([members, nonmembers])


def auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """ROC AUC: the chance a random member scores above a random non-member (ties 1/2)."""
    return float(roc_auc_score(*labelled(members, nonmembers)))


def roc(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of "member when score >= threshold", every distinct threshold."""
    fpr, tpr, thresholds = roc_curve(*labelled(members, nonmembers), drop_intermediate=False)
    return fpr, tpr, thresholds


def tpr_at_fpr(members: np.ndarray, nonmembers: np.ndarray,
               fpr_target: float = LOW_FPR) -> tuple[float, float]:
    """(TPR, threshold) of the best threshold whose FPR is at most ``fpr_target``.

    The largest TPR among the ROC's operating points with FPR <= target (no
    interpolation): an attacker can actually run at that point.
    """
    fpr, tpr, thresholds = roc(members, nonmembers)
    allowed = fpr <= fpr_target + 1e-12
    best = int(np.flatnonzero(allowed)[np.argmax(tpr[allowed])])
    return float(tpr[best]), float(thresholds[best])


def downsample_roc(fpr: np.ndarray, tpr: np.ndarray,
                   points: int = ROC_POINTS) -> list[list[float]]:
    """At most ``points`` [fpr, tpr] pairs, end points kept, for audit.json and plots.

    Points are spread evenly on a log-FPR axis below 1% and linearly above, so the
    low-FPR region that matters for privacy keeps its detail.
    """
    if len(fpr) <= points:
        keep = np.arange(len(fpr))
    else:
        grid = np.unique(np.concatenate([
            np.logspace(-5, -2, points // 2), np.linspace(0.01, 1.0, points - points // 2)]))
        keep = np.unique(np.concatenate([
            [0, len(fpr) - 1],
            np.clip(np.searchsorted(fpr, grid, side="right") - 1, 0, len(fpr) - 1)]))
    return [[round(float(fpr[i]), 6), round(float(tpr[i]), 6)] for i in keep]


def clopper_pearson(successes: int, trials: int,
                    confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Two-sided exact (Clopper-Pearson) interval of a binomial proportion.

    Each end holds with probability ``(1 + confidence) / 2`` on its own, so using the
    lower end of one rate and the upper end of another holds jointly with at least
    ``confidence`` (union bound).
    """
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials > 0, got {successes}/{trials}")
    alpha = 1.0 - confidence
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(
        beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return low, high


def clopper_pearson_bounds(successes: np.ndarray, trials: int,
                           confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """:func:`clopper_pearson` for an array of success counts at once."""
    k = np.asarray(successes)
    alpha = 1.0 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(k == 0, 0.0, beta.ppf(alpha / 2, np.maximum(k, 1), trials - k + 1))
        high = np.where(k == trials, 1.0,
                        beta.ppf(1 - alpha / 2, k + 1, np.maximum(trials - k, 1)))
    return low, high


def epsilon_from_rates(tpr: float, fpr: float, delta: float) -> float:
    """Smallest epsilon an (eps, delta)-DP mechanism needs to allow (TPR, FPR); >= 0.

    ``inf`` when no finite epsilon allows the pair (e.g. FPR = 0 with TPR > delta).
    """
    candidates = [0.0]
    for numerator, denominator in ((tpr - delta, fpr), (1.0 - delta - fpr, 1.0 - tpr)):
        if numerator <= 0:
            continue
        candidates.append(math.inf if denominator <= 0 else math.log(numerator / denominator))
    return max(candidates)


@dataclass(frozen=True)
class EpsilonBound:
    """An empirical epsilon from one threshold, measured on examples it was not chosen on.

    ``lower`` is the reported bound (lower TPR end, upper FPR end: holds with at least
    ``confidence``); ``point`` uses the measured rates; ``upper`` the optimistic ends.
    ``point``/``upper`` may be ``inf`` (no false positive at all); ``lower`` never is.
    """

    lower: float
    point: float
    upper: float
    threshold: float
    tpr: float
    fpr: float
    members: int
    nonmembers: int
    confidence: float

    def as_json(self) -> dict:
        """JSON-safe: ``inf`` becomes None (unbounded)."""
        return {k: (None if isinstance(v, float) and math.isinf(v) else v)
                for k, v in asdict(self).items()}


def bound_at(members: np.ndarray, nonmembers: np.ndarray, threshold: float, delta: float,
             confidence: float = CONFIDENCE) -> EpsilonBound:
    """The epsilon bound of "member when score >= threshold" on these examples."""
    members, nonmembers = np.asarray(members, float), np.asarray(nonmembers, float)
    tp, fp = int((members >= threshold).sum()), int((nonmembers >= threshold).sum())
    n_in, n_out = len(members), len(nonmembers)
    tpr_low, tpr_high = clopper_pearson(tp, n_in, confidence)
    fpr_low, fpr_high = clopper_pearson(fp, n_out, confidence)
    return EpsilonBound(
        lower=epsilon_from_rates(tpr_low, fpr_high, delta),
        point=epsilon_from_rates(tp / n_in, fp / n_out, delta),
        upper=epsilon_from_rates(tpr_high, fpr_low, delta),
        threshold=float(threshold), tpr=tp / n_in, fpr=fp / n_out,
        members=n_in, nonmembers=n_out, confidence=confidence)


def choose_threshold(members: np.ndarray, nonmembers: np.ndarray, delta: float,
                     confidence: float = CONFIDENCE) -> float:
    """The threshold whose conservative epsilon bound is largest on these examples.

    When no threshold gives a positive bound, the one with the largest TPR - FPR.
    """
    fpr, tpr, thresholds = roc(members, nonmembers)
    thresholds = np.where(np.isinf(thresholds), np.max(np.concatenate([members, nonmembers])) + 1,
                          thresholds)
    tp = np.rint(tpr * len(members)).astype(int)
    fp = np.rint(fpr * len(nonmembers)).astype(int)
    tpr_low = clopper_pearson_bounds(tp, len(members), confidence)[0]
    fpr_high = clopper_pearson_bounds(fp, len(nonmembers), confidence)[1]
    values = np.array([epsilon_from_rates(t, f, delta) for t, f in zip(tpr_low, fpr_high)])
    if values.max() <= 0:
        return float(thresholds[int(np.argmax(tpr - fpr))])
    return float(thresholds[int(np.argmax(values))])


def split_halves(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random split of ``range(count)`` into (selection, evaluation) halves."""
    order = rng.permutation(count)
    return order[: count // 2], order[count // 2:]


def empirical_epsilon(members: np.ndarray, nonmembers: np.ndarray, delta: float,
                      seed: int = 0, confidence: float = CONFIDENCE) -> EpsilonBound:
    """Choose the threshold on a random half of each set, bound epsilon on the other half."""
    members, nonmembers = np.asarray(members, float), np.asarray(nonmembers, float)
    if min(len(members), len(nonmembers)) < 2:
        raise ValueError("need at least 2 members and 2 non-members")
    rng = np.random.default_rng(seed)
    pick_in, eval_in = split_halves(len(members), rng)
    pick_out, eval_out = split_halves(len(nonmembers), rng)
    threshold = choose_threshold(members[pick_in], nonmembers[pick_out], delta, confidence)
    return bound_at(members[eval_in], nonmembers[eval_out], threshold, delta, confidence)


def attack_summary(members: np.ndarray, nonmembers: np.ndarray, delta: float,
                   seed: int = 0) -> dict:
    """Everything audit.json keeps for one attack."""
    fpr, tpr, _ = roc(members, nonmembers)
    low_tpr, low_threshold = tpr_at_fpr(members, nonmembers, LOW_FPR)
    bound = empirical_epsilon(members, nonmembers, delta, seed)
    return {
        "auc": auc(members, nonmembers),
        "tpr_at_1pct_fpr": low_tpr,
        "threshold_at_1pct_fpr": low_threshold if math.isfinite(low_threshold) else None,
        "threshold": bound.threshold,
        "eps_lower_bound": bound.lower,
        "eps_lower_bound_ci": [bound.lower, bound.as_json()["upper"]],
        "eps_point": bound.as_json()["point"],
        "eps_bound_detail": bound.as_json(),
        "members": int(len(members)),
        "nonmembers": int(len(nonmembers)),
        "roc": downsample_roc(fpr, tpr),
    }


def nearest_distances(queries: np.ndarray, references: np.ndarray,
                      chunk: int = 1024) -> np.ndarray:
    """L2 distance of each query to its nearest reference (both flattened per row).

    Chunked over both sets so memory stays at ``chunk x chunk`` distances.
    """
    import torch

    q = torch.as_tensor(np.asarray(queries, np.float32).reshape(len(queries), -1))
    r = torch.as_tensor(np.asarray(references, np.float32).reshape(len(references), -1))
    if len(r) == 0:
        raise ValueError("no reference samples to measure distances to")
    best = torch.full((len(q),), math.inf)
    with torch.no_grad():
        for i in range(0, len(q), chunk):
            block = q[i:i + chunk]
            for j in range(0, len(r), chunk):
                d = torch.cdist(block, r[j:j + chunk]).min(dim=1).values
                best[i:i + chunk] = torch.minimum(best[i:i + chunk], d)
    return best.numpy().astype(np.float64)


def nearest_distances_by_class(queries: np.ndarray, query_labels: np.ndarray,
                               references: np.ndarray, reference_labels: np.ndarray) -> np.ndarray:
    """Like :func:`nearest_distances`, to the nearest reference of the query's own label.

    Labels with no reference sample get the distance to the nearest of any label.
    """
    out = np.empty(len(queries))
    for label in np.unique(query_labels):
        rows = np.flatnonzero(query_labels == label)
        same = reference_labels == label
        pool = references[same] if same.any() else references
        out[rows] = nearest_distances(queries[rows], pool)
    return out
