"""The comparison the gate decides on (harness/gate/compare.py), on constructed runs: 1,000 documents of which a
seeded 60 % are right."""

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


def make_run(answers: list[int], doc_ids=None, prefill_tokens_per_s: float = 1000.0, version: str = "1",
             task: str = "quiz"):
    """(record, samples) of a run with one accuracy task, shaped as results.json and samples.jsonl."""
    doc_ids = doc_ids if doc_ids is not None else [str(i) for i in range(len(answers))]
    samples = [{"task": task, "doc_id": d, "scores": {"acc": a}} for d, a in zip(doc_ids, answers)]
    record = {
        "results": {task: {"acc": float(np.mean(answers)), "n": len(answers)}},
        "settings": {"seed": 1234, "chat_template": False},
        "tasks": {task: {"version": version, "prompt_hash": "abc", "num_fewshot": 0, "fewshot_ids": [],
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
    assert accuracy["difference"] == 0 and accuracy["p_value"] == 1.0 and accuracy["correlation"] == pytest.approx(1)
    low, high = accuracy["interval"]
    assert -0.01 < low < 0 < high < 0.01  # Newcombe's interval: no flip among 1,000 bounds the change tightly
    assert 0.005 < accuracy["mde"] < 0.01  # identical runs still need some flips: 5 of 1,000 at alpha 0.05


def test_three_flipped_answers_pass():
    answers = correct_answers()
    accuracy = row(gate.compare(make_run(answers), make_run(flip_right_to_wrong(answers, 3))), "acc")
    assert accuracy["difference"] == pytest.approx(-0.003)
    assert accuracy["p_value"] == pytest.approx(0.125)  # mid-p: 0.5 ** 3
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
    assert gate.systems_row("m", 1000, 1300, 0.1, higher_is_better=False)["verdict"] == "regressed"
    assert gate.systems_row("m", 1000, 700, 0.1, higher_is_better=False)["verdict"] == "improved"
    assert gate.systems_row("m", 1000, None, 0.1, higher_is_better=False)["verdict"] == "not comparable"


def perplexity_run(loglikelihoods: np.ndarray, words: np.ndarray):
    samples = [{"task": "text", "doc_id": str(i), "scores": {"word_perplexity": [float(ll), float(w)]}}
               for i, (ll, w) in enumerate(zip(loglikelihoods, words))]
    record = {"results": {"text": {"n": len(words)}},
              "tasks": {"text": {"version": "1", "prompt_hash": "p", "metrics": {
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


@pytest.mark.parametrize("field, value", [("fewshot_ids", ["7", "9"]), ("data_sha256", {"test.csv": "00"}),
                                          ("prompt_hash", "other"), ("temperature", 0.8)])
def test_anything_that_decides_the_numbers_makes_a_task_not_comparable(field, value):
    answers = correct_answers()
    other = make_run(answers)
    other[0]["tasks"]["quiz"][field] = value
    accuracy = row(gate.compare(make_run(answers), other), "acc")
    assert accuracy["verdict"] == "not comparable" and accuracy["reason"].startswith(f"{field} differs")


@pytest.mark.parametrize("setting, value", [("seed", 1), ("chat_template", True)])
def test_another_seed_or_chat_template_is_not_comparable(setting, value):
    answers = correct_answers()
    other = make_run(answers)
    other[0]["settings"][setting] = value
    assert row(gate.compare(make_run(answers), other), "acc")["reason"].startswith(f"{setting} differs")


def test_what_happened_in_the_run_does_not_decide_comparability():
    answers = correct_answers()
    other = make_run(answers)
    other[0]["tasks"]["quiz"].update({"truncated_requests": 3, "empty_generations": 2, "docs_evaluated": 1000,
                                      "tied_choices": 0})  # counted since issue 22: a baseline before it has none
    assert row(gate.compare(make_run(answers), other), "acc")["verdict"] == "pass"


def test_a_task_missing_on_either_side_is_not_comparable():
    answers = correct_answers()
    both = make_run(answers)
    extra = make_run(answers, task="other")
    both[0]["results"].update(extra[0]["results"])
    both[0]["tasks"].update(extra[0]["tasks"])
    rows = gate.compare(both, (make_run(answers)[0], make_run(answers)[1]))
    [missing] = [r for r in rows if r["task"] == "other"]
    assert missing["verdict"] == "not comparable" and missing["reason"] == "not in the run"
    rows = gate.compare(make_run(answers), both)
    assert [r for r in rows if r["task"] == "other"][0]["reason"] == "not in the baseline"


def pooled_runs(flips_in_first_subject: int):
    """A pooled group of three subjects of 300 questions, the group primary and the subjects secondary."""
    records, samples = [], []
    for flips in (0, flips_in_first_subject):
        record = {"results": {}, "tasks": {}, "settings": {}}
        run_samples = []
        for number, subject in enumerate(("algebra", "anatomy", "astronomy")):
            answers = [int(x) for x in np.random.default_rng(number).random(300) < 0.5]
            if number == 0:
                answers = flip_right_to_wrong(answers, flips)
            one = make_run(answers, task=subject)
            record["results"].update(one[0]["results"])
            record["tasks"].update(one[0]["tasks"])
            run_samples += one[1]
        record["results"]["science"] = {"n": 900, "acc": 0.5, "members": ["algebra", "anatomy", "astronomy"],
                                        "aggregation": "pooled"}
        records.append(record)
        samples.append(run_samples)
    return (records[0], samples[0]), (records[1], samples[1])


def test_a_pooled_group_is_primary_and_its_members_and_parts_secondary():
    baseline, run = pooled_runs(flips_in_first_subject=40)
    for record, _ in (baseline, run):  # a category of some of the same subjects, as MMLU's mmlu_stem
        record["results"]["stem"] = {"n": 600, "acc": 0.5, "members": ["algebra", "astronomy"],
                                     "aggregation": "pooled"}
    rows = gate.compare(baseline, run)
    roles = {r["task"]: r["role"] for r in rows}
    assert roles == {"algebra": "secondary", "anatomy": "secondary", "astronomy": "secondary", "science": "primary",
                     "stem": "secondary"}
    science = row([r for r in rows if r["task"] == "science"], "acc")
    assert science["n"] == 900 and science["difference"] == pytest.approx(-40 / 900)
    assert science["verdict"] == "regressed"


def test_three_metrics_of_one_set_of_loglikelihoods_are_one_primary_test():
    rng = np.random.default_rng(7)
    words = rng.integers(50, 500, size=50).astype(float)
    baseline = perplexity_run(-words * rng.uniform(2.5, 3.5, size=50), words)
    for record, samples in (baseline,):
        record["tasks"]["text"]["metrics"]["bits_per_byte"] = {"aggregation": "bits_per_byte",
                                                               "higher_is_better": False}
        for sample in samples:
            sample["scores"]["bits_per_byte"] = sample["scores"]["word_perplexity"]
    rows = gate.compare(baseline, baseline)
    assert [(r["metric"], r["role"]) for r in rows] == [("word_perplexity", "primary"), ("bits_per_byte", "secondary")]


def fifty_seven_subjects(down_in_first: int):
    """One run pair with 57 subjects of 200 questions; every subject has 2 answers flipped each way, and the first
    `down_in_first` more flipped down."""
    runs = [{"results": {}, "tasks": {}, "settings": {}}, {"results": {}, "tasks": {}, "settings": {}}]
    samples: list[list] = [[], []]
    for subject in range(57):
        answers = [int(x) for x in np.random.default_rng(subject).random(200) < 0.5]
        right = [i for i, a in enumerate(answers) if a]
        wrong = [i for i, a in enumerate(answers) if not a]
        changed = list(answers)
        for i in right[:2 + (down_in_first if subject == 0 else 0)]:
            changed[i] = 0
        for i in wrong[:2]:
            changed[i] = 1
        for side, values in enumerate((answers, changed)):
            record, run_samples = make_run(values, task=f"subject{subject}")
            runs[side]["results"].update(record["results"])
            runs[side]["tasks"].update(record["tasks"])
            samples[side] += run_samples
    return (runs[0], samples[0]), (runs[1], samples[1])


def test_holm_holds_fifty_seven_subjects_to_the_family_wise_level():
    # Subject 0: 10 answers flipped down, 2 up. Alone that reads regressed (mid-p 0.03); among 57 tests Holm
    # multiplies the smallest p-value by 57 and it passes. The others have 2 and 2: p = 1.
    rows = gate.compare(*fifty_seven_subjects(down_in_first=8))
    first = row([r for r in rows if r["task"] == "subject0"], "acc")
    assert 0.01 < first["p_value"] < 0.05 and first["p_adjusted"] == pytest.approx(min(1.0, 57 * first["p_value"]))
    assert first["verdict"] == "pass"
    by_bh = gate.compare(*fifty_seven_subjects(down_in_first=8), correction="bh")
    by_bh_first = row([r for r in by_bh if r["task"] == "subject0"], "acc")
    assert by_bh_first["p_adjusted"] == pytest.approx(min(1.0, 57 * first["p_value"]))
    baseline, run = fifty_seven_subjects(down_in_first=8)
    alone = [({"results": {"subject0": r["results"]["subject0"]}, "tasks": {"subject0": r["tasks"]["subject0"]}},
              [s for s in samples if s["task"] == "subject0"]) for r, samples in (baseline, run)]
    assert row(gate.compare(*alone), "acc")["verdict"] == "regressed"
    # A real drop in one subject survives the correction: 40 down, 2 up.
    rows = gate.compare(*fifty_seven_subjects(down_in_first=38))
    assert row([r for r in rows if r["task"] == "subject0"], "acc")["verdict"] == "regressed"


def test_a_declared_drop_larger_than_the_mde_passes_and_a_smaller_one_is_underpowered():
    answers = correct_answers()
    seen = row(gate.compare(make_run(answers), make_run(answers), min_effect={"quiz:acc": (0.03, False)}), "acc")
    assert seen["verdict"] == "pass" and seen["min_effect"] == 0.03 and seen["mde"] < 0.03
    small = make_run(answers[:40])
    blind = row(gate.compare(small, small, min_effect={"quiz:acc": (0.03, False)}), "acc")
    assert blind["verdict"] == "underpowered" and blind["mde"] > 0.03
    relative = row(gate.compare(small, small, min_effect={"quiz:acc": (2.0, True)}), "acc")
    assert relative["min_effect"] == pytest.approx(2.0 * np.mean(answers[:40])) and relative["verdict"] == "pass"


def test_a_real_drop_smaller_than_the_declared_one_still_regresses_and_says_so():
    """Sixty flipped answers (6 points) are a real drop; declared 10 points, the gate still fails it (a real change
    is not noise) and names the difference, so that accepting it is a decision written as a new baseline."""
    answers = correct_answers()
    rows = gate.compare(make_run(answers), make_run(flip_right_to_wrong(answers, 60)),
                        min_effect={"quiz:acc": (0.10, False)})
    accuracy = row(rows, "acc")
    assert accuracy["verdict"] == "regressed" and "smaller than the declared drop of 0.1" in accuracy["reason"]
    declared_smaller = row(gate.compare(make_run(answers), make_run(flip_right_to_wrong(answers, 60)),
                                        min_effect={"quiz:acc": (0.03, False)}), "acc")
    assert declared_smaller["verdict"] == "regressed" and declared_smaller["reason"] is None


def test_too_few_perplexity_documents_cannot_see_any_drop_even_between_identical_runs():
    """Identical runs have no spread of differences; a real change would have some (ASSUMED_CV of its size), and
    with fewer than ((z + z_power) * cv)^2 = 7.85 documents at alpha 0.05 none can be seen."""
    rng = np.random.default_rng(7)
    words = rng.integers(50, 500, size=20).astype(float)
    declared = {"text:word_perplexity": (0.02, True)}
    for size, verdict in ((7, "underpowered"), (8, "pass")):
        run = perplexity_run(-words[:size] * 3.0, words[:size])
        assert row(gate.compare(run, run, min_effect=declared), "word_perplexity")["verdict"] == verdict
