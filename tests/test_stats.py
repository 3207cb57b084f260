"""harness/stats.py: stderrs as lm-eval reports them, and the 95 % interval beside each (docs/statistics.md):
Wilson's for a mean of 0/1 values, Student's t for other means and clustered ones, the bootstrap percentile
interval for everything else; clustered stderrs for documents that are not independent; the stratified stderr of
a pooled group."""

import math

import numpy as np
import pytest
from scipy.stats import t

from harness import stats


def test_wilson_interval_known_values():
    # 0.5 on 2 questions: the old value +- 1.96 stderr printed -0.48 to 1.48.
    value, stderr, interval = stats.aggregate("mean", [1.0, 0.0])
    assert (value, stderr) == (0.5, 0.5)
    assert interval == pytest.approx((0.0945, 0.9055), abs=1e-4)
    # 0 of 10: not the empty [0, 0] of the normal interval, but [0, z^2/n / (1 + z^2/n)].
    value, stderr, interval = stats.aggregate("mean", [0.0] * 10)
    assert (value, stderr) == (0.0, 0.0) and interval == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert stats.aggregate("mean", [True] * 10)[2] == pytest.approx((0.7225, 1.0), abs=1e-4)  # mirror image
    assert stats.aggregate("mean", [1.0])[1:] == (None, None)  # n < 2: neither is defined


def test_intervals_of_binary_data_never_leave_the_unit_interval():
    for n in range(2, 41):
        for successes in range(n + 1):
            value, _, (low, high) = stats.aggregate("mean", [1.0] * successes + [0.0] * (n - successes))
            assert 0.0 <= low <= value <= high <= 1.0


def test_a_mean_of_other_values_gets_students_t():
    values = [2.0, 3.5, 5.0, 4.0]  # not proportions: nothing to clip
    value, stderr, (low, high) = stats.aggregate("mean", values)
    half = t.ppf(0.975, len(values) - 1) * stderr
    assert (low, high) == pytest.approx((value - half, value + half))
    assert half > stats.Z_95 * stderr  # wider than the normal interval at n = 4
    # Proportion-like per-sample values (pass@k of a problem, a toxicity score) are clipped to [0, 1].
    value, stderr, (low, high) = stats.aggregate("mean", [0.0, 0.1, 0.05, 0.9])
    assert low == 0.0 and high == pytest.approx(value + t.ppf(0.975, 3) * stderr)


def test_wilson_covers_at_small_n_where_the_normal_interval_does_not():
    # n = 20 questions, true accuracy 0.1. Wilson's actual coverage there is 0.957 (summed exactly over the
    # binomial outcomes); the normal interval's is 0.876, since 0 of 20 (probability 0.9^20 = 0.12) gives it
    # [0, 0], which misses 0.1. The Monte Carlo standard error of a coverage near 0.95 from 2,000 draws is
    # sqrt(0.95 * 0.05 / 2000) = 0.005 (0.007 near 0.88), so 0.92 is 7 standard errors below Wilson's and 0.90 more
    # than 3 above the normal interval's: the test fails if either interval changes, not by chance.
    p, n = 0.1, 20
    draws = np.random.default_rng(20241105).binomial(1, p, size=(2000, n)).astype(float)
    wilson = normal = 0
    for row in draws:
        value, stderr, (low, high) = stats.aggregate("mean", list(row))
        wilson += low <= p <= high
        normal += value - stats.Z_95 * stderr <= p <= value + stats.Z_95 * stderr
    assert wilson / len(draws) >= 0.92
    assert normal / len(draws) <= 0.90


def test_clustered_stderr_with_singleton_clusters_pins_the_formula():
    # Every cluster of size 1: sum_i (x_i - mean)^2 / n^2 = (n - 1) / n * (sample variance / n).
    values = list(np.random.default_rng(3).random(25))
    unclustered = stats.mean_stderr(values)
    clustered = stats.clustered_mean_stderr(values, list(range(len(values))))
    assert clustered == pytest.approx(math.sqrt((len(values) - 1) / len(values)) * unclustered, rel=1e-12)
    value, stderr, (low, high) = stats.aggregate("mean", values, clusters=[f"c{i}" for i in range(len(values))])
    assert value == stats.mean(values) and stderr == pytest.approx(clustered)
    assert high - value == pytest.approx(t.ppf(0.975, len(values) - 1) * stderr)  # df = clusters - 1


def test_clustered_stderr_grows_with_correlation_inside_clusters():
    # 8 passages of 4 questions each, all right or all wrong together: 8 observations' worth, not 32.
    values = [float(passage % 2) for passage in range(8) for _ in range(4)]
    clusters = [passage for passage in range(8) for _ in range(4)]
    value, unclustered, _ = stats.aggregate("mean", values)
    same_value, clustered, (low, high) = stats.aggregate("mean", values, clusters=clusters)
    assert same_value == value == 0.5
    assert clustered == pytest.approx(math.sqrt(8 * (4 * 0.5) ** 2) / 32)  # Miller's formula by hand: 0.177
    assert clustered > 1.9 * unclustered  # about sqrt(4 questions a passage) times
    assert high - low == pytest.approx(2 * t.ppf(0.975, 7) * clustered)  # df = 8 clusters - 1, inside [0, 1]
    assert stats.aggregate("mean", values, clusters=["one"] * len(values))[1:] == (None, None)  # one cluster


def test_bootstrap_interval_is_the_percentiles_of_the_same_estimates():
    rng = np.random.default_rng(7)
    pairs = [(-float(rng.uniform(50, 500)), int(rng.integers(20, 200))) for _ in range(30)]
    value, stderr, (low, high) = stats.aggregate("weighted_perplexity", pairs, seed=1234)
    assert low < value < high
    estimates = stats.bootstrap_estimates(stats.weighted_perplexity, pairs, 1234)
    assert stderr == stats.bootstrap_stderr(stats.weighted_perplexity, pairs, 1234)  # as before intervals
    assert (low, high) == pytest.approx(tuple(np.percentile(estimates, [2.5, 97.5])))


def test_cluster_bootstrap_resamples_whole_clusters():
    # Each of 12 documents scored three times over (three near-identical chunks): the clusters, not the 36 rows,
    # are what was sampled, so the clustered bootstrap's spread is about sqrt(3) times the row bootstrap's.
    rng = np.random.default_rng(11)
    documents = [(-float(rng.uniform(50, 500)), 100) for _ in range(12)]
    rows = [document for document in documents for _ in range(3)]
    clusters = [i for i in range(12) for _ in range(3)]
    value, rows_stderr, _ = stats.aggregate("weighted_perplexity", rows, seed=0)
    same_value, clustered_stderr, (low, high) = stats.aggregate("weighted_perplexity", rows, seed=0,
                                                               clusters=clusters)
    assert same_value == value and low < value < high
    assert clustered_stderr > 1.4 * rows_stderr


def test_stratified_stderr_of_a_pooled_group():
    assert stats.stratified_stderr([10, 30], [0.2, 0.1]) == pytest.approx(math.sqrt(0.25**2 * 0.04 + 0.75**2 * 0.01))
    assert stats.stratified_stderr([10, 30], [0.2, None]) is None


def test_stratified_stderr_equals_lm_evals_pooled_stderr_at_equal_sizes():
    # lm-eval 0.4.13 gives a size-weighted group pooled_sample_stderr: sqrt(sum (n_s - 1) n_s se_s^2 / (N - k) / N).
    # Ours weighs stratum variances by n_s / N instead of (n_s - 1) / (N - k): equal when sizes are equal.
    metrics = pytest.importorskip("lm_eval.api.metrics")
    stderrs = [0.13, 0.15, 0.10]
    assert stats.stratified_stderr([10, 10, 10], stderrs) == pytest.approx(
        metrics.pooled_sample_stderr(stderrs, [10, 10, 10]), rel=1e-12)
    unequal = stats.stratified_stderr([100, 1534, 300], stderrs)
    assert unequal == pytest.approx(metrics.pooled_sample_stderr(stderrs, [100, 1534, 300]), rel=0.01)


def test_normal_interval_of_a_group():
    assert stats.normal_interval(0.5, 0.1) == pytest.approx((0.5 - 0.196, 0.5 + 0.196), abs=1e-4)
    assert stats.normal_interval(0.05, 0.1, proportion=True)[0] == 0.0
    assert stats.normal_interval(0.5, None) is None


def test_mcc_and_f1_equal_scikit_learns_to_the_last_bit():
    """lm-eval computes GLUE's MCC and F1 with scikit-learn; ours are numpy (the bootstrap calls them a thousand
    times a run). Equal bit for bit, at QQP's size too, where n^4 no longer fits float64's 53 bits and only the
    same operations in the same order round the same way; and on the degenerate cases (one label everywhere, no
    positive anywhere)."""
    from sklearn.metrics import f1_score, matthews_corrcoef

    rng = np.random.default_rng(0)
    cases = [[(0, 0)] * 5, [(1, 1)] * 5, [(0, 1)] * 4, [(1, 0), (1, 0)], [(0, 0), (1, 1)], [(0, 1), (1, 0)]]
    for n in (2, 7, 100, 1043, 40430):
        for p_gold, p_predicted in ((0.5, 0.5), (0.3, 0.9), (0.05, 0.02)):
            gold = rng.random(n) < p_gold
            predicted = np.where(rng.random(n) < 0.7, gold, rng.random(n) < p_predicted)
            cases.append(list(zip(gold.astype(int).tolist(), predicted.astype(int).tolist())))
    for pairs in cases:
        gold, predicted = zip(*pairs)
        assert stats.mcc(pairs) == float(matthews_corrcoef(gold, predicted)), pairs[:4]
        assert stats.f1(pairs) == float(f1_score(gold, predicted, zero_division=0.0)), pairs[:4]
