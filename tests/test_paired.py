"""The statistics of a paired comparison (harness/gate/paired.py) and of multiplicity (harness/gate/multiplicity.py),
each against a hand computation or a simulation that would fail if the formula were wrong."""

import itertools
import math

import numpy as np
import pytest

from harness.gate import paired
from harness.gate.multiplicity import adjust


def test_mcnemar_mid_p_by_hand():
    # b = 3, c = 0: mid-p = 2 * (0 + P(X = 0) / 2) = 0.5 ** 3 with X ~ Binomial(3, 1/2).
    assert paired.mcnemar_mid_p(3, 0) == pytest.approx(0.125)
    # b = 2, c = 8 (n = 10): 2 * (P(X <= 1) + P(X = 2) / 2) = 2 * (11 + 45 / 2) / 1024.
    assert paired.mcnemar_mid_p(2, 8) == pytest.approx(2 * (11 + 22.5) / 1024)
    assert paired.mcnemar_mid_p(0, 0) == 1.0 and paired.mcnemar_mid_p(5, 5) == pytest.approx(1.0)


def test_newcombe_interval_covers_the_true_difference():
    """Paired 0/1 scores of n = 40 documents: baseline right with p 0.6, run right with p 0.5, correlated. The 95 %
    interval must cover the true difference -0.1 about 95 % of the time; Newcombe (1998) reports method 10's
    coverage at 0.93-0.96 over such settings. 2,000 draws give a Monte Carlo standard error of 0.005, so 0.925 is
    a bound that a wrong formula (the Wald interval covers less at this n, an unpaired one far more) fails."""
    rng = np.random.default_rng(11)
    # Joint cell probabilities: both right, baseline only, run only, both wrong (marginals 0.6 and 0.5).
    cells = [0.4, 0.2, 0.1, 0.3]
    covered = 0
    widths = []
    for _ in range(2000):
        a, b, c, d = rng.multinomial(40, cells)
        low, high = paired.newcombe_interval(int(a), int(b), int(c), int(d))
        covered += low <= -0.1 <= high
        widths.append(high - low)
        assert -1 <= low <= high <= 1
    assert covered / 2000 >= 0.925
    # An unpaired interval would ignore the positive correlation and be wider: sqrt(2 * 0.25 / 40) * 3.92 = 0.44.
    assert np.mean(widths) < 0.40


def test_exact_permutation_test_by_hand():
    # Four documents, every difference +1: of the 16 sign patterns only all-plus and all-minus reach |mean| = 1.
    result = paired.compare_paired([0.2, 0.3, 0.4, 0.5], [1.2, 1.3, 1.4, 1.5], "mean")
    assert result["test"] == "permutation-exact" and result["p_value"] == pytest.approx(2 / 16)


def test_bootstrap_beyond_sixteen_documents_is_seeded():
    values = np.random.default_rng(3).random(100)
    first = paired.compare_paired(values, values + 0.01, "mean", seed=5)
    assert first["test"] == "paired-bootstrap" and first == paired.compare_paired(values, values + 0.01, "mean", seed=5)


def test_connor_power_matches_a_simulation_of_the_exact_test():
    """The MDE rests on Connor's normal approximation; the gate decides with the exact mid-p test. Simulated at
    the MDE (predicted power 0.80), the test must detect within 5 points of 0.80 (2,000 draws: MC error 0.009)."""
    rng = np.random.default_rng(5)
    for n, churn in ((300, 0.08), (1300, 0.08)):
        change = paired.mcnemar_mde(n, churn, 0.05)
        assert paired.mcnemar_power(n, churn, change, 0.05) == pytest.approx(0.8, abs=1e-6)
        detected = 0
        for _ in range(2000):
            b, c, _ = rng.multinomial(n, [churn / 2 + change, churn / 2, 1 - churn - change])
            detected += paired.mcnemar_mid_p(int(b), int(c)) < 0.05 and b > c
        assert abs(detected / 2000 - 0.8) < 0.05


def test_minimum_detectable_effect_shrinks_with_documents_and_grows_with_churn():
    assert paired.mcnemar_mde(10, 0.0, 0.05) > 0.5  # ten questions can see almost nothing
    assert paired.mcnemar_mde(1000, 0.0, 0.05) < paired.mcnemar_mde(1000, 0.1, 0.05) < 0.04
    assert paired.mcnemar_mde(4, 0.0, 0.05) == math.inf  # four flips give p = 0.0625 at best


def test_holm_and_benjamini_hochberg_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06.
    assert adjust(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: times 4/1, 4/2, 4/3, 4/4 = 0.02, 0.02, 0.04, 0.04, then the running minimum from the top.
    assert adjust(p, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    with pytest.raises(ValueError):
        adjust(p, "bonferonni")


def test_pooled_means_compare_per_question_with_the_aggregate_recomputed():
    # MT-Bench's samples: (sum of readable ratings, their count) per question; a question may hold none.
    baseline = [(14.0, 2), (9.0, 2), (6.0, 1), (0.0, 0), (16.0, 2), (10.0, 2)]
    run = [(16.0, 2), (12.0, 2), (8.0, 2), (7.0, 1), (17.0, 2), (13.0, 2)]
    result = paired.compare_paired(baseline, run, "pooled_mean")
    assert result["baseline"] == pytest.approx(55 / 9) and result["run"] == pytest.approx(73 / 11)
    assert result["difference"] == pytest.approx(73 / 11 - 55 / 9)
    # Every way of swapping the two runs' samples within questions, the pooled means recomputed.
    pooled = lambda pairs: sum(t for t, _ in pairs) / sum(c for _, c in pairs)
    swaps = [pooled([r if flip else b for b, r, flip in zip(baseline, run, flips)])
             - pooled([b if flip else r for b, r, flip in zip(baseline, run, flips)])
             for flips in itertools.product((0, 1), repeat=len(run))]
    observed = pooled(run) - pooled(baseline)
    expected = sum(abs(d) >= abs(observed) - 1e-12 for d in swaps) / len(swaps)
    assert result["test"] == "permutation-exact" and result["p_value"] == pytest.approx(expected, abs=1e-12)
    # The correlation of per-question means leaves out the question without a value in the baseline.
    first, second = [7, 4.5, 6, 8, 5], [8, 6, 4, 8.5, 6.5]
    assert result["correlation"] == pytest.approx(np.corrcoef(first, second)[0, 1])
