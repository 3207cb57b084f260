"""Paired comparison of two runs on the same documents: the difference, its interval, the per-document correlation,
a p-value from the test that fits the scores, and the smallest change the comparison could have detected.

Which test (Miller 2024, "Adding Error Bars to Evals", arXiv 2411.00640, sec. 4 and 5, argues for paired tests and
power analysis; the tests themselves are the textbook ones cited at each function):

  binary scores (0/1, aggregated by "mean")   McNemar's mid-p test on the discordant pairs, exact at every n
                                             (Fagerland, Lydersen & Laake 2013, BMC Med. Res. Methodol. 13:91:
                                             the mid-p keeps close to the nominal level where the exact
                                             conditional test is conservative); the interval of the difference is
                                             Newcombe's hybrid score interval for paired proportions (Newcombe
                                             1998, Stat. Med. 17:2635, method 10), which stays inside [-1, 1]
  other scores, up to EXACT_UP_TO documents  the exact paired permutation test: every way of swapping the two
                                             runs' values within documents (2^n of them), the aggregate recomputed
                                             (Fisher 1935; Good 2005, "Permutation tests", ch. 3)
  other scores, more documents               Efron's paired bootstrap (Efron & Tibshirani 1993, ch. 16): the same
                                             documents resampled for both runs; p inverts the percentile interval
                                             with Davison & Hinkley's (k + 1) / (B + 1) (1997, sec. 4.4)

The minimum detectable effect (MDE) is the smallest true change this comparison would report with 80 % power at
the given alpha:
  binary    Connor's (1987, Biometrics 43:207) power of McNemar's test, with the two-way churn the runs show
            (2 min(b, c) / n answers flipped each way) as the harmless background and the change as one-way flips
            on top of it; solved for the change. Two identical runs still get an MDE: a change must flip answers.
  otherwise (z_{1-alpha/2} + z_{power}) times the paired standard error of the difference (the standard deviation
            of the bootstrap differences, or of the per-document differences over sqrt(n) for a mean), as in
            Miller 2024 eq. 9: it assumes a real change would spread over documents as the observed one does.
"""

from __future__ import annotations

import itertools
import math
from statistics import NormalDist
from typing import Any, Sequence

import numpy as np
from scipy.special import bdtr

from harness.stats import AGGREGATIONS, percentile_interval, wilson_interval

POWER = 0.8
BOOTSTRAP_ITERATIONS = 2000
# The spread of a real change's per-document effects over its mean effect, when nothing measured it: the
# per-document changes vary as much as their mean (harness/gate/plan.py takes the same default).
ASSUMED_CV = 1.0
EXACT_UP_TO = 16  # documents: 2^16 = 65,536 swaps of a permutation test take well under a second


NORMAL = NormalDist()  # the standard library's: a hundred times faster per call than scipy's, for the bisection


def z(probability: float) -> float:
    return NORMAL.inv_cdf(probability)


def mcnemar_mid_p(b: int, c: int) -> float:
    """Two-sided mid-p of McNemar's test: b pairs went one way, c the other; under no change each is a fair coin.
    mid-p = 2 * (P(X < k) + P(X = k) / 2), X ~ Binomial(b + c, 1/2), k = min(b, c); at most 1."""
    discordant, k = b + c, min(b, c)
    if discordant == 0:
        return 1.0
    # scipy.special.bdtr is the binomial CDF as a plain ufunc, without scipy.stats' per-call overhead.
    below = float(bdtr(k - 1, discordant, 0.5)) if k > 0 else 0.0
    at = float(bdtr(k, discordant, 0.5)) - below
    return min(1.0, 2 * (below + at / 2))


def newcombe_interval(a: int, b: int, c: int, d: int) -> tuple[float, float]:
    """Interval of run - baseline accuracy for paired 0/1 scores: a both right, b only the baseline right, c only the
    run right, d both wrong (Newcombe 1998, method 10: Wilson intervals of each proportion, combined with the
    phi correlation of the pairs)."""
    n = a + b + c + d
    baseline, run = (a + b) / n, (a + c) / n
    low_baseline, high_baseline = wilson_interval(a + b, n)
    low_run, high_run = wilson_interval(a + c, n)
    denominator = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(denominator) if denominator > 0 else 0.0
    difference = run - baseline
    below = math.sqrt(max(0.0, (run - low_run) ** 2 - 2 * phi * (run - low_run) * (high_baseline - baseline)
                          + (high_baseline - baseline) ** 2))
    above = math.sqrt(max(0.0, (high_run - run) ** 2 - 2 * phi * (high_run - run) * (baseline - low_baseline)
                          + (baseline - low_baseline) ** 2))
    return max(-1.0, difference - below), min(1.0, difference + above)


def mcnemar_power(n: int, churn: float, change: float, alpha: float) -> float:
    """Connor 1987: power of the two-sided McNemar test at level alpha to see `change` (a fraction of the n
    answers flipped one way) on top of `churn` (a fraction flipped, half each way, by a harmless change)."""
    discordant = churn + change
    if discordant <= 0 or change <= 0:
        return 0.0
    spread = math.sqrt(max(discordant - change * change, 1e-12))
    return NORMAL.cdf((math.sqrt(n) * change - z(1 - alpha / 2) * math.sqrt(discordant)) / spread)


def fewest_flips(alpha: float) -> int:
    """The fewest one-way flips McNemar's mid-p test can call significant: k flips and nothing else give 0.5 ** k."""
    return math.floor(math.log2(1 / alpha)) + 1


def mcnemar_mde(n: int, churn: float, alpha: float, power: float = POWER) -> float:
    """The smallest one-way change (a fraction of answers) that McNemar's test sees with `power`; 1.0 and beyond
    means none can be seen. Bisection: the power grows with the change, which with the churn flips at most all
    the answers."""
    largest = 1.0 - churn
    # Exactness first: fewer than fewest_flips(alpha) flips can never be significant, whatever the approximation
    # says at small n.
    flips = fewest_flips(alpha)
    if largest <= 0 or flips > n or mcnemar_power(n, churn, largest, alpha) < power:
        return math.inf
    low, high = 0.0, largest
    for _ in range(40):  # 1e-12 of the interval: far below any change that matters
        middle = (low + high) / 2
        low, high = (middle, high) if mcnemar_power(n, churn, middle, alpha) < power else (low, middle)
    return max(high, flips / n)


def normal_mde(standard_error: float, alpha: float, power: float = POWER) -> float:
    return (z(1 - alpha / 2) + z(power)) * standard_error


# A per-document number for the correlation of the two runs, by aggregation: the samples of perplexity-like
# aggregates are (log-likelihood, weight) pairs, those of label metrics (gold, predicted) pairs.
def per_document(aggregation: str, samples: Sequence[Any]) -> np.ndarray:
    values = np.asarray(samples, dtype=np.float64)
    if aggregation in ("weighted_perplexity", "bits_per_byte"):
        return values[:, 0] / values[:, 1]
    if aggregation == "pooled_mean":  # a document's own mean; NaN where it holds no value (every judgment failed)
        return np.divide(values[:, 0], values[:, 1], out=np.full(len(values), np.nan), where=values[:, 1] > 0)
    if aggregation in ("mcc", "f1"):
        return (values[:, 0] == values[:, 1]).astype(np.float64)
    if aggregation in ("pearson", "spearman"):
        return -np.abs(values[:, 0] - values[:, 1])
    return values


def correlation(first: np.ndarray, second: np.ndarray) -> float | None:
    """Pearson correlation of the two runs' per-document values, over the documents that have one in both; None
    when either is constant."""
    both = np.isfinite(first) & np.isfinite(second)
    first, second = first[both], second[both]
    if first.size < 2 or np.ptp(first) == 0 or np.ptp(second) == 0:
        return None
    return float(np.corrcoef(first, second)[0, 1])


def binary_comparison(baseline: np.ndarray, run: np.ndarray) -> dict:
    n = baseline.size
    a = int(np.sum((baseline == 1) & (run == 1)))
    b = int(np.sum((baseline == 1) & (run == 0)))  # baseline right, run wrong
    c = int(np.sum((baseline == 0) & (run == 1)))  # baseline wrong, run right
    d = n - a - b - c
    return {"baseline": float(baseline.mean()), "run": float(run.mean()), "difference": (c - b) / n,
            "interval": list(newcombe_interval(a, b, c, d)), "p_value": mcnemar_mid_p(b, c),
            "test": "mcnemar-mid-p", "discordant": [b, c], "churn": 2 * min(b, c) / n, "standard_error": None}


def swap_differences(aggregate, baseline: np.ndarray, run: np.ndarray) -> np.ndarray:
    """aggregate(run) - aggregate(baseline) under every swap of the two runs' values within documents."""
    differences = []
    for swapped in itertools.product((False, True), repeat=len(baseline)):
        mask = np.array(swapped)
        if baseline.ndim > 1:
            mask = mask[:, None]
        first, second = np.where(mask, run, baseline), np.where(mask, baseline, run)
        differences.append(aggregate(second) - aggregate(first))
    return np.asarray(differences, dtype=np.float64)


def resampled_differences(aggregate, baseline: np.ndarray, run: np.ndarray, seed: int,
                          iterations: int = BOOTSTRAP_ITERATIONS) -> np.ndarray:
    picks = np.random.default_rng(seed).integers(0, len(baseline), size=(iterations, len(baseline)))
    differences = np.array([aggregate(run[p]) - aggregate(baseline[p]) for p in picks], dtype=np.float64)
    return differences[np.isfinite(differences)]  # a degenerate resample (a constant column) is left out


def general_comparison(baseline: np.ndarray, run: np.ndarray, aggregation: str, seed: int) -> dict:
    aggregate = AGGREGATIONS[aggregation]
    base_score, run_score = aggregate(baseline), aggregate(run)
    difference = run_score - base_score
    result = {"baseline": float(base_score), "run": float(run_score), "difference": float(difference),
              "interval": None, "p_value": None, "churn": None, "standard_error": None}
    n = len(baseline)
    resampled = resampled_differences(aggregate, baseline, run, seed)
    if n < 2 or resampled.size < 2 or not math.isfinite(difference):
        return {**result, "test": "none (too few documents)"}
    interval = list(percentile_interval(resampled))
    if aggregation == "mean":
        standard_error = float(np.std(run - baseline, ddof=1) / math.sqrt(n))
    else:
        standard_error = float(np.std(resampled, ddof=1))
    if n <= EXACT_UP_TO:
        swapped = swap_differences(aggregate, baseline, run)
        swapped = swapped[np.isfinite(swapped)]
        # Two-sided: the share of swaps at least as far from zero as the observed difference (which is one of them).
        p_value = float(np.mean(np.abs(swapped) >= abs(difference) - 1e-12 * max(1.0, abs(difference))))
        test = "permutation-exact"
    else:
        other_side = np.sum(resampled <= 0) if difference >= 0 else np.sum(resampled >= 0)
        if difference == 0:
            other_side = min(np.sum(resampled <= 0), np.sum(resampled >= 0))
        p_value = min(1.0, 2 * (other_side + 1) / (resampled.size + 1))
        test = "paired-bootstrap"
    return {**result, "interval": interval, "p_value": float(p_value), "test": test,
            "standard_error": standard_error}


def compare_paired(baseline_samples: Sequence[Any], run_samples: Sequence[Any], aggregation: str,
                   seed: int = 0) -> dict:
    """{"baseline", "run", "difference", "interval", "correlation", "p_value", "test", "n", "churn",
    "standard_error"} of aggregate(run) - aggregate(baseline); sample i of both lists is the same document. The last
    two are what minimum_detectable_effect needs."""
    baseline = np.asarray(baseline_samples, dtype=np.float64)
    run = np.asarray(run_samples, dtype=np.float64)
    if baseline.shape != run.shape or len(baseline) == 0:
        raise ValueError("paired samples need the same, non-zero number of documents")
    binary = aggregation == "mean" and bool(np.all(np.isin(baseline, (0, 1))) and np.all(np.isin(run, (0, 1))))
    result = binary_comparison(baseline, run) if binary else general_comparison(baseline, run, aggregation, seed)
    result["correlation"] = correlation(per_document(aggregation, baseline), per_document(aggregation, run))
    result["n"] = len(baseline)
    return result


def minimum_detectable_effect(result: dict, alpha: float, power: float = POWER) -> float | None:
    """The MDE of a compare_paired result at level alpha, in the metric's units (inf: no change can be seen).
    For other scores the observed spread of the differences can be zero (two identical runs), which would make
    any change look visible; a real change spreads over documents too, by ASSUMED_CV of its size (what `harness
    plan` assumes without a reference), and with fewer documents than that needs no change can be seen."""
    if result.get("churn") is not None:
        return mcnemar_mde(result["n"], result["churn"], alpha, power)
    if result.get("standard_error") is not None:
        if result["n"] < ((z(1 - alpha / 2) + z(power)) * ASSUMED_CV) ** 2:
            return math.inf
        return normal_mde(result["standard_error"], alpha, power)
    return None
