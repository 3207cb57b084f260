"""Aggregations that tasks name by string (see harness/engine/task.py), their standard errors and 95 % intervals.

stderr of a mean is the sample standard deviation (n - 1) over sqrt(n), as lm-eval reports it. Perplexity-like
aggregates and correlations are not means of independent samples, so their stderr is a bootstrap over documents.

Every metric also gets a 95 % interval, chosen to be honest at the small n of a `--limit` run (docs/statistics.md):
  a mean of 0/1 values                Wilson's score interval (never leaves [0, 1], not empty at 0 of n)
  any other mean, or a clustered one  mean +- t(0.975, df) * stderr (Student's t), clipped to [0, 1] when every
                                      per-sample value lies in [0, 1]
  a bootstrap aggregate               the 2.5th and 97.5th percentiles of the bootstrap estimates (the percentile
                                      interval, Efron & Tibshirani 1993, ch. 13)
Documents that are not independent (Task.cluster) get clustered standard errors: Miller 2024 for a mean, whole
clusters resampled for a bootstrap aggregate.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

BOOTSTRAP_ITERATIONS = 1000
Z_95 = 1.959963984540054  # the 97.5th percentile of the standard normal

Interval = tuple[float, float]


def mean(values: Sequence[float]) -> float:
    return float(np.mean(values))


def std(values: Sequence[float]) -> float:
    """The sample standard deviation (n - 1): the spread of a per-sample value (RealToxicityPrompts)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def weighted_perplexity(pairs: Sequence[tuple[float, float]]) -> float:
    loglikelihood, weight = np.asarray(pairs, dtype=np.float64).sum(axis=0)
    return float(math.exp(-loglikelihood / weight))


def bits_per_byte(pairs: Sequence[tuple[float, float]]) -> float:
    loglikelihood, size = np.asarray(pairs, dtype=np.float64).sum(axis=0)
    return float(-loglikelihood / size / math.log(2))


def pooled_mean(pairs: Sequence[tuple[float, float]]) -> float:
    """sum(totals) / sum(counts) over (total, count) samples: the mean of every value pooled, where a document
    holds several values or none (a judge's ratings of two turns, one of them unreadable); NaN with no value."""
    count = float(sum(c for _, c in pairs))
    return float(sum(t for t, _ in pairs)) / count if count > 0 else math.nan


def mcc(pairs: Sequence[tuple[int, int]]) -> float:
    """Matthews correlation of (gold, predicted) labels, as lm-eval computes it (scikit-learn's
    matthews_corrcoef): from the per-label totals t (gold) and p (predicted), c correct of n,
    (c*n - t.p) / sqrt((n^2 - t.t) * (n^2 - p.p)), and 0 when either factor is 0. In numpy, not through
    scikit-learn, because the bootstrap calls it a thousand times per run and scikit-learn's input checks cost
    5 ms a call; the sums are integers held exactly in float64 and the last three operations are scikit-learn's,
    in its order, so the value is the same to the last bit (tests/test_stats.py)."""
    gold, predicted = np.asarray(pairs).T
    labels = np.union1d(gold, predicted)
    gold_totals = (gold[:, None] == labels).sum(axis=0).astype(np.float64)
    predicted_totals = (predicted[:, None] == labels).sum(axis=0).astype(np.float64)
    correct, n = float((gold == predicted).sum()), predicted_totals.sum()
    covariance = correct * n - np.dot(gold_totals, predicted_totals)
    predicted_variance = n ** 2 - np.dot(predicted_totals, predicted_totals)
    gold_variance = n ** 2 - np.dot(gold_totals, gold_totals)
    if predicted_variance * gold_variance == 0:
        return 0.0
    return float(covariance / np.sqrt(gold_variance * predicted_variance))


def f1(pairs: Sequence[tuple[int, int]]) -> float:
    """F1 of the positive label 1 over (gold, predicted) labels, as lm-eval computes it (scikit-learn's f1_score
    with zero_division=0): 2 tp / (gold positives + predicted positives), 0 when both are 0. In numpy for the
    bootstrap's sake, as mcc above; equal to scikit-learn's to the last bit (tests/test_stats.py)."""
    gold, predicted = np.asarray(pairs).T
    positives = float((gold == 1).sum()) + float((predicted == 1).sum())
    if positives == 0:
        return 0.0
    return float(2.0 * float(((gold == 1) & (predicted == 1)).sum()) / positives)


def pearson(pairs: Sequence[tuple[float, float]]) -> float:
    """Pearson correlation of (predicted, gold) values; NaN when either side is constant."""
    from scipy.stats import pearsonr  # deferred: scipy.stats takes a second to import

    predicted, gold = np.asarray(pairs, dtype=np.float64).T
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(pearsonr(predicted, gold).statistic)


def spearman(pairs: Sequence[tuple[float, float]]) -> float:
    """Spearman rank correlation of (predicted, gold) values; NaN when either side is constant."""
    from scipy.stats import spearmanr  # deferred: scipy.stats takes a second to import

    predicted, gold = np.asarray(pairs, dtype=np.float64).T
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(predicted, gold).statistic)


AGGREGATIONS: dict[str, Callable[[Sequence[Any]], float]] = {
    "mean": mean,
    "std": std,
    "weighted_perplexity": weighted_perplexity,
    "bits_per_byte": bits_per_byte,
    "pooled_mean": pooled_mean,
    "mcc": mcc,
    "f1": f1,
    "pearson": pearson,
    "spearman": spearman,
}


def mean_stderr(values: Sequence[float]) -> float | None:
    if len(values) < 2:
        return None
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def cluster_members(clusters: Sequence[Hashable]) -> list[list[int]]:
    """The positions of each cluster's samples, clusters in the order they first appear."""
    members: dict[Hashable, list[int]] = {}
    for position, cluster in enumerate(clusters):
        members.setdefault(cluster, []).append(position)
    return list(members.values())


def clustered_mean_stderr(values: Sequence[float], clusters: Sequence[Hashable]) -> float | None:
    """The cluster-robust stderr of a mean (Miller 2024, "Adding Error Bars to Evals", arXiv:2411.00640, its
    clustered standard error): sqrt(sum over clusters c of (sum_{i in c} (x_i - mean))^2) / n. The cross terms of
    each cluster add its internal correlation to the variance; with every cluster of size 1 it is the plain stderr
    times sqrt((n - 1) / n) (a variance over n, not n - 1). Undefined with fewer than two clusters."""
    groups = cluster_members(clusters)
    if len(groups) < 2:
        return None
    x = np.asarray(values, dtype=np.float64)
    residuals = x - x.mean()
    return float(math.sqrt(sum(residuals[g].sum() ** 2 for g in groups)) / len(x))


def bootstrap_estimates(aggregate: Callable, samples: Sequence[Any], seed: int,
                        iterations: int = BOOTSTRAP_ITERATIONS,
                        clusters: Sequence[Hashable] | None = None) -> np.ndarray | None:
    """The aggregate of `iterations` resamples (documents, or whole clusters when given), the finite ones only;
    None when there are fewer than two documents (or clusters) to resample."""
    if clusters is None:
        if len(samples) < 2:
            return None
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, len(samples), size=(iterations, len(samples)))
        estimates = np.array([aggregate([samples[i] for i in row]) for row in picks], dtype=np.float64)
    else:
        groups = cluster_members(clusters)
        if len(groups) < 2:
            return None
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, len(groups), size=(iterations, len(groups)))
        estimates = np.array([aggregate([samples[i] for c in row for i in groups[c]]) for row in picks],
                             dtype=np.float64)
    # A resample can be degenerate (the correlation of constant values is undefined): it is left out rather
    # than poisoning the estimate.
    return estimates[np.isfinite(estimates)]


def bootstrap_stderr(aggregate: Callable, samples: Sequence[Any], seed: int,
                     iterations: int = BOOTSTRAP_ITERATIONS) -> float | None:
    estimates = bootstrap_estimates(aggregate, samples, seed, iterations)
    return float(np.std(estimates, ddof=1)) if estimates is not None and len(estimates) >= 2 else None


def wilson_interval(successes: float, n: int, z: float = Z_95) -> Interval:
    """Wilson's score interval for a proportion (E. B. Wilson, "Probable inference, the law of succession, and
    statistical inference", JASA 22:209-212, 1927): the proportions p whose normal test |p_hat - p| <=
    z * sqrt(p (1 - p) / n) does not reject. Unlike p_hat +- z * stderr it stays inside [0, 1], is not empty at 0
    or n successes (0 of 10 gives [0, 0.2775]), and covers close to 95 % even at small n."""
    p_hat = successes / n
    denominator = 1 + z * z / n
    centre = (p_hat + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p_hat * (1 - p_hat) / n + z * z / (4 * n * n))
    # At 0 (or n) successes the lower (upper) bound is exactly 0 (1); rounding would leave it 1e-17 off.
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return low, high


def t_interval(value: float, stderr: float | None, df: int, proportion: bool) -> Interval | None:
    """value +- t(0.975, df) * stderr: Student's t rather than 1.96, whose interval is too narrow at small n."""
    if stderr is None or df < 1 or not math.isfinite(value) or not math.isfinite(stderr):
        return None
    from scipy.stats import t  # deferred: scipy.stats takes a second to import

    half = float(t.ppf(0.975, df)) * stderr
    return clip((value - half, value + half), proportion)


def normal_interval(value: float, stderr: float | None, proportion: bool = False) -> Interval | None:
    """value +- 1.96 * stderr, for a group's row, whose stderr combines its tasks' (no single df to give t)."""
    if stderr is None or not math.isfinite(value) or not math.isfinite(stderr):
        return None
    return clip((value - Z_95 * stderr, value + Z_95 * stderr), proportion)


def clip(interval: Interval, proportion: bool) -> Interval:
    # A mean of values in [0, 1] (pass@k of a problem, a toxicity score) cannot leave [0, 1]; the symmetric
    # interval can at small n or near the ends, and its part outside is impossible, not uncertain.
    low, high = interval
    return (max(0.0, low), min(1.0, high)) if proportion else (float(low), float(high))


def in_unit_interval(values: Sequence[Any]) -> bool:
    x = np.asarray(values, dtype=np.float64)
    return bool(np.all((x >= 0) & (x <= 1)))  # NaN fails both comparisons


def percentile_interval(estimates: np.ndarray | None) -> Interval | None:
    """The 2.5th and 97.5th percentiles of bootstrap estimates: the percentile interval (Efron & Tibshirani, An
    Introduction to the Bootstrap, 1993, ch. 13), which follows a skewed sampling distribution (perplexity)."""
    if estimates is None or len(estimates) < 2:
        return None
    low, high = np.percentile(estimates, [2.5, 97.5])
    return float(low), float(high)


def macro_average(values: Sequence[float], stderrs: Sequence[float | None]) -> tuple[float, float | None]:
    """The plain mean of independent tasks' scores; its stderr combines theirs: sqrt(sum(se^2)) / k."""
    value = float(np.mean(values))
    if any(se is None for se in stderrs):
        return value, None
    return value, float(math.sqrt(sum(se * se for se in stderrs)) / len(stderrs))


def stratified_stderr(sizes: Sequence[int], stderrs: Sequence[float | None]) -> float | None:
    """The stderr of a size-weighted mean over strata, sqrt(sum_s (n_s / N)^2 * se_s^2): each stratum (an MMLU
    subject) is always in the benchmark in full and only the questions within it are sampled, so the spread
    between strata is not sampling error. lm-eval's pooled_sample_stderr differs only when sizes differ
    (docs/statistics.md). None when a stratum has no stderr (a single document)."""
    if not sizes or any(se is None for se in stderrs):
        return None
    total = sum(sizes)
    return float(math.sqrt(sum((n / total) ** 2 * se * se for n, se in zip(sizes, stderrs))))


def aggregate(name: str, samples: Sequence[Any], seed: int = 0, clusters: Sequence[Hashable] | None = None
              ) -> tuple[float, float | None, Interval | None]:
    """(value, stderr, 95 % interval) of one metric over its per-sample values. `clusters`, one hashable id per
    sample or None, makes the stderr and interval clustered; the value never depends on it."""
    function = AGGREGATIONS[name]
    value = function(samples)
    if name != "mean":
        estimates = bootstrap_estimates(function, samples, seed, clusters=clusters)
        stderr = float(np.std(estimates, ddof=1)) if estimates is not None and len(estimates) >= 2 else None
        interval = percentile_interval(estimates) if stderr is not None and math.isfinite(value) else None
        return value, stderr, interval
    if clusters is not None:
        stderr = clustered_mean_stderr(samples, clusters)
        return value, stderr, t_interval(value, stderr, len(cluster_members(clusters)) - 1, in_unit_interval(samples))
    stderr = mean_stderr(samples)
    if stderr is None:
        return value, None, None
    if all(v in (0, 1) for v in samples):
        return value, stderr, wilson_interval(float(sum(samples)), len(samples))
    return value, stderr, t_interval(value, stderr, len(samples) - 1, in_unit_interval(samples))
