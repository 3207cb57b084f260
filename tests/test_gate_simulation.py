"""The gate's error rates by simulation, through harness.gate.compare as `harness gate` calls it.

A harmless change (a kernel, a batch size, a quantization that costs nothing) flips some answers each way: each
document is discordant with probability `churn` (5-10 %, what the issue measured for such changes), and a discordant
document went either way with probability 1/2. A real drop of size delta adds one-way flips: a document is
(right, wrong) with probability churn / 2 + delta. 1,000 draws give a Monte Carlo standard error of at most
sqrt(0.05 * 0.95 / 1000) = 0.0069 on a rate near 0.05 and 0.0126 on one near 0.8; the bounds are three of them.
"""

import math

import numpy as np
import pytest

from harness.gate import compare as gate
from harness.gate.paired import compare_paired, mcnemar_mde, mcnemar_power

DRAWS = 1000
ALPHA = 0.05
FALSE_ALARM_BOUND = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / DRAWS)


def paired_answers(rng, n: int, churn: float, drop: float = 0.0) -> tuple[list[int], list[int]]:
    kind = rng.choice(4, size=n, p=[churn / 2 + drop, churn / 2, (1 - churn - drop) / 2, (1 - churn - drop) / 2])
    baseline = np.isin(kind, (0, 2)).astype(int)  # 0: right then wrong, 1: wrong then right, 2: both right
    run = np.isin(kind, (1, 2)).astype(int)
    return baseline.tolist(), run.tolist()


def runs(tasks: dict[str, tuple[list[int], list[int]]]):
    """(baseline, run) records with one accuracy task per entry."""
    pair = []
    for side in (0, 1):
        record = {"results": {}, "tasks": {}, "settings": {}}
        samples = []
        for task, answers in tasks.items():
            values = answers[side]
            record["results"][task] = {"n": len(values), "acc": float(np.mean(values))}
            record["tasks"][task] = {"version": "1", "prompt_hash": "p",
                                     "metrics": {"acc": {"aggregation": "mean", "higher_is_better": True}}}
            samples += [{"task": task, "doc_id": str(i), "scores": {"acc": v}} for i, v in enumerate(values)]
        pair.append((record, samples))
    return pair


def any_regressed(rows: list[dict]) -> bool:
    return any(row["verdict"] == "regressed" and row["role"] == "primary" for row in rows)


def test_one_task_raises_a_false_alarm_at_most_alpha_of_the_time():
    rng = np.random.default_rng(20)
    alarms = sum(any_regressed(gate.compare(*runs({"quiz": paired_answers(rng, 200, rng.uniform(0.05, 0.10))})))
                 for _ in range(DRAWS))
    assert alarms / DRAWS <= FALSE_ALARM_BOUND


@pytest.mark.slow
def test_fifty_seven_subjects_together_raise_a_false_alarm_at_most_alpha_of_the_time():
    """Without a correction, at least one of 57 subjects reads 'regressed' in about 70 % of harmless changes (each
    is a one-sided 2 % chance); Holm holds the chance of any at alpha, and BH, with every subject unchanged,
    too (its false discovery rate is then the family-wise rate). The rows are made by the gate's own functions
    from each subject's paired scores (compare_paired, then decide, as compare does) without building 11,000
    sample records per draw; the pairing of documents is tested in tests/test_gate.py. Both corrections judge the
    same draws (the paired comparisons are the costly part)."""
    rng = np.random.default_rng(57)
    alarms, uncorrected = {"holm": 0, "bh": 0}, 0
    for _ in range(DRAWS):
        rows = []
        for subject in range(57):
            baseline, run = paired_answers(rng, int(rng.integers(100, 301)), rng.uniform(0.05, 0.10))
            rows.append(gate.paired_row(f"subject{subject}", "acc", "primary",
                                        compare_paired(baseline, run, "mean"), higher_is_better=True))
        uncorrected += any(row["p_value"] < ALPHA and row["difference"] < 0 for row in rows)
        for correction in alarms:
            judged = [dict(row) for row in rows]  # decide() writes its verdicts into the rows
            gate.decide(judged, ALPHA, correction, min_effect={})
            alarms[correction] += any_regressed(judged)
    assert alarms["holm"] / DRAWS <= FALSE_ALARM_BOUND and alarms["bh"] / DRAWS <= FALSE_ALARM_BOUND, alarms
    assert uncorrected / DRAWS > 0.5  # the simulation is one where the correction matters


def test_a_drop_of_the_declared_size_is_caught_as_often_as_predicted():
    """At the MDE the predicted power is 0.80; the gate, deciding with the exact mid-p test, must catch the drop in
    0.80 +- 0.05 of the draws."""
    rng = np.random.default_rng(80)
    n, churn = 1300, 0.08
    drop = mcnemar_mde(n, churn, ALPHA)
    assert 0.02 < drop < 0.04 and mcnemar_power(n, churn, drop, ALPHA) == pytest.approx(0.8, abs=1e-6)
    caught = sum(any_regressed(gate.compare(*runs({"quiz": paired_answers(rng, n, churn, drop)})))
                 for _ in range(DRAWS))
    assert abs(caught / DRAWS - 0.8) <= 0.05
