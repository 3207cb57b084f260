"""Aggregations that tasks name by string (see harness/engine/task.py), and their standard errors.

stderr of a mean is the sample standard deviation (n - 1) over sqrt(n), as lm-eval reports it. Perplexity-like
aggregates and correlations are not means of independent samples, so their stderr is a bootstrap over documents.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Sequence

import numpy as np

BOOTSTRAP_ITERATIONS = 1000


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


def mcc(pairs: Sequence[tuple[int, int]]) -> float:
    """Matthews correlation of (gold, predicted) labels, as lm-eval computes it (scikit-learn)."""
    from sklearn.metrics import matthews_corrcoef  # deferred: scikit-learn takes seconds to import

    gold, predicted = zip(*pairs)
    return float(matthews_corrcoef(gold, predicted))


def f1(pairs: Sequence[tuple[int, int]]) -> float:
    """F1 of the positive label 1 over (gold, predicted) labels, as lm-eval computes it (scikit-learn)."""
    from sklearn.metrics import f1_score  # deferred: scikit-learn takes seconds to import

    gold, predicted = zip(*pairs)
    return float(f1_score(gold, predicted, zero_division=0.0))


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
    "mcc": mcc,
    "f1": f1,
    "pearson": pearson,
    "spearman": spearman,
}


def mean_stderr(values: Sequence[float]) -> float | None:
    if len(values) < 2:
        return None
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def bootstrap_stderr(aggregate: Callable, samples: Sequence[Any], seed: int,
                     iterations: int = BOOTSTRAP_ITERATIONS) -> float | None:
    if len(samples) < 2:
        return None
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(samples), size=(iterations, len(samples)))
    estimates = np.array([aggregate([samples[i] for i in row]) for row in picks], dtype=np.float64)
    # A resample can be degenerate (the correlation of constant values is undefined): it is left out rather
    # than poisoning the estimate.
    estimates = estimates[np.isfinite(estimates)]
    return float(np.std(estimates, ddof=1)) if len(estimates) >= 2 else None


def macro_average(values: Sequence[float], stderrs: Sequence[float | None]) -> tuple[float, float | None]:
    """The plain mean of independent tasks' scores; its stderr combines theirs: sqrt(sum(se^2)) / k."""
    value = float(np.mean(values))
    if any(se is None for se in stderrs):
        return value, None
    return value, float(math.sqrt(sum(se * se for se in stderrs)) / len(stderrs))


def aggregate(name: str, samples: Sequence[Any], seed: int = 0) -> tuple[float, float | None]:
    """(value, stderr) of one metric over its per-sample values."""
    function = AGGREGATIONS[name]
    value = function(samples)
    stderr = mean_stderr(samples) if name == "mean" else bootstrap_stderr(function, samples, seed)
    return value, stderr
