"""The regression gate (harness/gate/compare.py) on constructed runs: 1,000 documents of which a seeded 60 % are right."""

import json

import numpy as np
import pytest

from harness.gate import compare as gate
from harness.record.run_folder import read_run

DOCUMENTS = 1000


def correct_answers(seed: int = 1234) -> list[int]:
    return [int(x) for x in np.random.default_rng(seed).random(DOCUMENTS) < 0.6]


def flip_right_to_wrong(answers: list[int], count: int) -> list[int]:
    flipped = list(answers)
    right = [i for i, value in enumerate(answers) if value == 1]
    for i in right[:count]:
        flipped[i] = 0
    return flipped


def make_run(answers: list[int], doc_ids=None, prefill_tokens_per_s: float = 1000.0, version: str = "1"):
    """(record, samples) of a run with one accuracy task, shaped as results.json and samples.jsonl."""
    doc_ids = doc_ids if doc_ids is not None else [str(i) for i in range(len(answers))]
    samples = [{"task": "quiz", "doc_id": d, "scores": {"acc": a}} for d, a in zip(doc_ids, answers)]
    record = {
        "results": {"quiz": {"acc": float(np.mean(answers)), "n": len(answers)}},
        "tasks": {"quiz": {"version": version, "prompt_hash": "abc",
                           "metrics": {"acc": {"aggregation": "mean", "higher_is_better": True}}}},
        "systems": {"run": {"prefill": {"tokens_per_s": prefill_tokens_per_s}, "decode": {"tokens_per_s": 50.0}},
                    "memory": {"peak_rss_bytes": 2_000_000_000}},
    }
    return record, samples


def row(rows: list[dict], metric: str) -> dict:
    [found] = [r for r in rows if r["metric"] == metric]
    return found


def test_identical_runs_pass():
    run = make_run(correct_answers())
    rows = gate.compare(run, run)
    assert {r["verdict"] for r in rows} == {"pass"}
    accuracy = row(rows, "acc")
    assert accuracy["difference"] == 0 and accuracy["p_value"] == 1.0 and accuracy["interval"] == [0.0, 0.0]


def test_three_flipped_answers_pass():
    answers = correct_answers()
    accuracy = row(gate.compare(make_run(answers), make_run(flip_right_to_wrong(answers, 3))), "acc")
    assert accuracy["difference"] == pytest.approx(-0.003)
    assert accuracy["p_value"] == pytest.approx(0.25)  # exact: 2 * 0.5**3
    assert accuracy["verdict"] == "pass"


def test_sixty_flipped_answers_regress():
    answers = correct_answers()
    accuracy = row(gate.compare(make_run(answers), make_run(flip_right_to_wrong(answers, 60))), "acc")
    assert accuracy["difference"] == pytest.approx(-0.06)
    assert accuracy["p_value"] < 0.05
    assert accuracy["interval"][1] < 0
    assert accuracy["verdict"] == "regressed"


def test_sixty_answers_flipped_the_other_way_improve():
    answers = correct_answers()
    accuracy = row(gate.compare(make_run(flip_right_to_wrong(answers, 60)), make_run(answers)), "acc")
    assert accuracy["verdict"] == "improved"


def test_throughput_drop_of_thirty_percent_fails_and_five_percent_passes():
    answers = correct_answers()
    baseline = make_run(answers, prefill_tokens_per_s=1000.0)
    slow = row(gate.compare(baseline, make_run(answers, prefill_tokens_per_s=700.0)), "systems:prefill.tokens_per_s")
    assert slow["verdict"] == "regressed" and slow["relative_change"] == pytest.approx(-0.3)
    slightly = make_run(answers, prefill_tokens_per_s=950.0)
    assert row(gate.compare(baseline, slightly), "systems:prefill.tokens_per_s")["verdict"] == "pass"


def test_memory_growth_regresses():
    assert gate.relative_threshold(1000, 1300, 0.1, higher_is_better=False)["verdict"] == "regressed"
    assert gate.relative_threshold(1000, 700, 0.1, higher_is_better=False)["verdict"] == "improved"
    assert gate.relative_threshold(1000, None, 0.1, higher_is_better=False)["verdict"] == "not comparable"


def test_mcnemar_exact_p_value_by_hand():
    baseline = [0] * 10 + [1] * 5
    run = [1] * 10 + [1] * 5  # b = 0, c = 10
    result = gate.paired_accuracy_test(baseline, run)
    assert result["discordant"] == [0, 10] and result["test"] == "mcnemar-exact"
    assert result["p_value"] == pytest.approx(2 * 0.5 ** 10)


def test_mcnemar_chi_square_from_twenty_five_discordant_pairs():
    p_value, test = gate.mcnemar_p_value(20, 10)
    assert test == "mcnemar-chi2"
    assert p_value == pytest.approx(0.1003482, rel=1e-5)  # chi2 = (10 - 1)^2 / 30 = 2.7 on 1 df


def perplexity_run(loglikelihoods: np.ndarray, words: np.ndarray):
    samples = [{"task": "text", "doc_id": str(i), "scores": {"word_perplexity": [float(ll), float(w)]}}
               for i, (ll, w) in enumerate(zip(loglikelihoods, words))]
    record = {"results": {}, "tasks": {"text": {"version": "1", "prompt_hash": "p", "metrics": {
        "word_perplexity": {"aggregation": "weighted_perplexity", "higher_is_better": False}}}}}
    return record, samples


def test_perplexity_bootstrap_identical_passes_and_worse_regresses():
    rng = np.random.default_rng(7)
    words = rng.integers(50, 500, size=200).astype(float)
    loglikelihoods = -words * rng.uniform(2.5, 3.5, size=200)
    baseline = perplexity_run(loglikelihoods, words)

    same = row(gate.compare(baseline, baseline), "word_perplexity")
    assert same["verdict"] == "pass" and same["p_value"] == 1.0 and same["difference"] == 0

    worse = row(gate.compare(baseline, perplexity_run(loglikelihoods - 0.2 * words, words)), "word_perplexity")
    assert worse["difference"] > 0 and worse["interval"][0] > 0
    assert worse["p_value"] < 0.05 and worse["verdict"] == "regressed"


def test_float_noise_in_perplexity_passes():
    """Another CPU's kernels move every document's loglikelihood by about 1e-6 relative, all the same way: the
    bootstrap finds that significant, but it is below the numerical tolerance, so it is not a regression."""
    rng = np.random.default_rng(7)
    words = rng.integers(50, 500, size=200).astype(float)
    loglikelihoods = -words * rng.uniform(2.5, 3.5, size=200)
    noisy = row(gate.compare(perplexity_run(loglikelihoods, words),
                             perplexity_run(loglikelihoods * (1 + 1e-6), words)), "word_perplexity")
    assert noisy["difference"] > 0 and noisy["p_value"] < 0.05 and noisy["verdict"] == "pass"


def test_speed_on_other_hardware_is_not_comparable_but_quality_still_gated():
    baseline, run = make_run(correct_answers()), make_run(flip_right_to_wrong(correct_answers(), 60),
                                                          prefill_tokens_per_s=300.0)
    baseline[0]["environment"] = {"hardware": {"cpu_model": "AMD EPYC 9B14", "logical_cores": 2}}
    run[0]["environment"] = {"hardware": {"cpu_model": "Intel Xeon Platinum 8370C", "logical_cores": 2}}
    rows = gate.compare(baseline, run)
    speed = row(rows, "systems:prefill.tokens_per_s")
    assert speed["verdict"] == "not comparable" and "cpu_model" in speed["reason"]
    assert row(rows, "acc")["verdict"] == "regressed"
    run[0]["environment"] = baseline[0]["environment"]  # the same machine: a 70 % drop in speed regresses
    assert row(gate.compare(baseline, run), "systems:prefill.tokens_per_s")["verdict"] == "regressed"


def test_bootstrap_is_seeded():
    values = np.random.default_rng(3).random(100)
    first = gate.bootstrap_test(values, values + 0.01, "mean", seed=5, iterations=200)
    assert first == gate.bootstrap_test(values, values + 0.01, "mean", seed=5, iterations=200)


def test_different_documents_are_not_comparable():
    answers = correct_answers()
    other_ids = [str(i) for i in range(1, DOCUMENTS + 1)]
    accuracy = row(gate.compare(make_run(answers), make_run(answers, doc_ids=other_ids)), "acc")
    assert accuracy["verdict"] == "not comparable" and "different documents" in accuracy["reason"]


def test_different_task_version_is_not_comparable():
    answers = correct_answers()
    accuracy = row(gate.compare(make_run(answers), make_run(answers, version="2")), "acc")
    assert accuracy["verdict"] == "not comparable" and "version" in accuracy["reason"]


def test_load_run_reads_a_run_folder(tmp_path):
    record, samples = make_run(correct_answers()[:5])
    (tmp_path / "results.json").write_text(json.dumps(record))
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    assert read_run(tmp_path) == (record, samples)
