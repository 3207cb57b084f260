"""Perturbations (harness/robustness): what they change and what they must never change, their reproducibility, and
the statistics of the robustness rows, on the real task data without a model."""

from __future__ import annotations

import numpy as np
import pytest

import tasks
from harness.engine.requests import LoglikelihoodResult
from harness.engine.task import TaskOptions
from harness.errors import UserError
from harness.gate.paired import compare_paired
from harness.robustness.analysis import analyse, hotelling, position_bias
from harness.robustness.perturbations import NEIGHBOURS, parse_perturbation, parse_perturbations
from harness.robustness.perturbed_task import make_variant, why_not
from harness.robustness.variants import perturbed_variants


def variant(task_name: str, spec: str, seed: int = 1234, **options):
    return make_variant(tasks.build(task_name, TaskOptions(**options)), parse_perturbation(spec), seed)


# ---- parsing and applicability ---------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, message", [
    ("shuffle=all", "unknown perturbation 'shuffle'; choose from choices=permute"),
    ("typos=0", "a number above 0 and at most 1"),
    ("typos=1.5", "a number above 0 and at most 1"),
    ("typos=often", "a number above 0 and at most 1"),
    ("whitespace=1", "an integer from 2 to 10"),
    ("case=title", "case takes lower or upper"),
    ("choices=sort", "choices takes permute"),
    ("typos", "expected KIND=VALUE"),
])
def test_bad_specs_are_refused_naming_what_applies(spec, message):
    with pytest.raises(UserError, match=message):
        parse_perturbation(spec)


def test_specs_parse_once_each_in_order():
    parsed = parse_perturbations(("typos=0.05", "choices=permute", "typos=.05", "typos=0.1"))
    assert [p.name for p in parsed] == ["typos=0.05", "choices=permute", "typos=0.1"]


@pytest.mark.parametrize("task_name, spec, reason", [
    ("truthfulqa_mc1", "choices=permute", "never listed in the prompt"),
    ("sst2", "choices=permute", "never listed in the prompt"),
    ("gsm8k", "choices=permute", "never listed in the prompt"),
    ("wikitext", "typos=0.05", "not built from a question"),
    ("crows_pairs_english_age", "case=lower", "not built from a question"),
    ("truthfulqa_mc2", "format=variants", "one layout only"),
])
def test_perturbations_that_cannot_apply_say_why_and_where_they_do(task_name, spec, reason):
    task = tasks.build(task_name)
    assert reason in why_not(task, parse_perturbation(spec))
    with pytest.raises(UserError, match=f"does not apply to {task_name}: .*{reason}.*; it applies to .*mmlu"):
        perturbed_variants([task], (spec,), seed=0)


# ---- text perturbations: the question only, reproducibly -------------------------------------------------------

def test_typos_change_only_the_question_and_only_into_keyboard_neighbours():
    task = variant("mmlu_anatomy", "typos=0.3")
    for doc in task.docs()[:20]:
        perturbed = task.perturbed(doc)
        assert perturbed.fields["choices"] == doc.fields["choices"]
        assert perturbed.fields["answer"] == doc.fields["answer"]
        assert task.target(doc) == task.base.target(doc)
        before, after = doc.fields["question"], perturbed.fields["question"]
        assert len(before) == len(after)
        changed = [(a, b) for a, b in zip(before, after) if a != b]
        for a, b in changed:
            assert b.lower() in NEIGHBOURS[a.lower()] and a.isupper() == b.isupper()
        # The continuations (the answer letters) are the clean task's.
        assert [r.continuation for r in task.requests(doc)] == [" A", " B", " C", " D"]
    letters = sum(c.lower() in NEIGHBOURS for d in task.docs() for c in d.fields["question"])
    typos = sum(a != b for d in task.docs() for a, b in zip(d.fields["question"], task.perturbed(d).fields["question"]))
    # At a rate of 0.3 over thousands of letters the share is within a few points of it (binomial sd < 0.01).
    assert 0.27 < typos / letters < 0.33


def test_text_perturbations_are_the_same_under_one_seed_and_differ_under_another():
    doc = tasks.build("mmlu_anatomy").docs()[7]
    first = variant("mmlu_anatomy", "typos=0.2", seed=1).perturbed(doc).fields["question"]
    again = variant("mmlu_anatomy", "typos=0.2", seed=1).perturbed(doc).fields["question"]
    other = variant("mmlu_anatomy", "typos=0.2", seed=2).perturbed(doc).fields["question"]
    assert first == again != other


def test_few_shot_examples_stay_clean_and_case_changes_only_the_question():
    clean = tasks.build("mmlu_anatomy", TaskOptions(num_fewshot=5))
    upper = variant("mmlu_anatomy", "case=upper", num_fewshot=5)
    doc = clean.docs()[3]
    clean_prompt, upper_prompt = clean.prompt(doc), upper.requests(doc)[0].context
    assert upper_prompt.shots == clean_prompt.shots and upper_prompt.description == clean_prompt.description
    question = doc.fields["question"].strip()
    assert question != question.upper() and upper_prompt.question.startswith(question.upper())
    # After the question, the choices, their labels and "Answer:" are written as they were.
    assert upper_prompt.question[len(question):] == clean_prompt.question[len(question):]


def test_whitespace_and_gsm8k_keep_the_gold_answer():
    task = variant("gsm8k", "whitespace=4")
    for doc in task.docs()[:10]:
        perturbed = task.perturbed(doc)
        assert perturbed.fields["answer"] == doc.fields["answer"]
        assert perturbed.fields["question"].split() == doc.fields["question"].split()
        assert task.target(doc) == task.base.target(doc)


# ---- choice permutations ---------------------------------------------------------------------------------------

def test_every_rotation_keeps_the_gold_choice_and_puts_each_choice_at_each_letter_once():
    task = variant("mmlu_anatomy", "choices=permute")
    assert task.orders == 4
    for doc in task.docs()[:10]:
        gold = doc.fields["choices"][doc.fields["answer"]]
        rotations = [task.rotated(doc, k) for k in range(4)]
        for rotated in rotations:
            assert rotated.fields["choices"][rotated.fields["answer"]] == gold
            assert sorted(rotated.fields["choices"]) == sorted(doc.fields["choices"])
        for position in range(4):
            assert sorted(r.fields["choices"][position] for r in rotations) == sorted(doc.fields["choices"])
        assert sorted(r.fields["answer"] for r in rotations) == [0, 1, 2, 3]
        # Order 0 asks exactly the clean task's requests: its answers come from the response cache.
        assert task.requests(doc)[:4] == task.base.requests(doc)


def answers_preferring(preferred: list[int]) -> list[LoglikelihoodResult]:
    """Four orders' answers, the choice at position preferred[k] the most likely under order k."""
    return [LoglikelihoodResult(0.0 if i == position else -1.0 - i, False)
            for position in preferred for i in range(4)]


def test_scores_of_a_model_that_always_answers_a():
    task = variant("mmlu_anatomy", "choices=permute")
    doc = task.docs()[0]
    scores = task.score(doc, answers_preferring([0, 0, 0, 0]))
    assert scores["acc"] == 0.25 and scores["consistency"] == 0.0 and scores["acc_every_order"] == 0.0
    assert scores["chosen"] == [0, 0, 0, 0]
    assert sorted(scores["gold"]) == [0, 1, 2, 3]
    assert [scores[f"acc_order_{k}"] for k in range(4)] == [float(g == 0) for g in scores["gold"]]


def test_scores_of_a_model_that_knows_the_answer_in_every_order():
    task = variant("mmlu_anatomy", "choices=permute")
    doc = task.docs()[0]
    gold_positions = [task.rotated(doc, k).fields["answer"] for k in range(4)]
    scores = task.score(doc, answers_preferring(gold_positions))
    assert scores["acc"] == 1.0 and scores["consistency"] == 1.0 and scores["acc_every_order"] == 1.0
    # The same wrong content under every order is consistent too.
    wrong = (doc.fields["answer"] + 1) % 4
    scores = task.score(doc, answers_preferring([(wrong - k) % 4 for k in range(4)]))
    assert scores["acc"] == 0.0 and scores["consistency"] == 1.0


# ---- the position-bias test ------------------------------------------------------------------------------------

def rotations_gold(questions: int) -> np.ndarray:
    return np.array([[(g - k) % 4 for k in range(4)] for g in np.arange(questions) % 4])


def test_hotelling_matches_its_formula_on_full_rank_data():
    rng = np.random.default_rng(0)
    differences = rng.normal(0.05, 0.2, size=(40, 3))
    statistic, p_value, df = hotelling(differences)
    mean, covariance = differences.mean(axis=0), np.cov(differences, rowvar=False)
    assert statistic == pytest.approx(40 * mean @ np.linalg.inv(covariance) @ mean, rel=1e-9)
    assert df == [3, 37] and 0 <= p_value <= 1


def test_content_only_choices_show_no_position_bias():
    gold = rotations_gold(30)
    knows = gold.copy()  # the gold choice under every order
    bias = position_bias(knows, gold, list("ABCD"))
    assert bias["p_value"] == 1.0
    assert all(letter["chosen_share"] == 0.25 for letter in bias["letters"])


def test_always_the_same_letter_is_a_certain_bias():
    gold = rotations_gold(30)
    bias = position_bias(np.zeros_like(gold), gold, list("ABCD"))
    assert bias["p_value"] == 0.0 and bias["statistic"] is None
    assert [letter["chosen_share"] for letter in bias["letters"]] == [1.0, 0.0, 0.0, 0.0]


def test_the_position_bias_test_holds_its_level_and_sees_a_real_preference():
    """Random answers with no preference for a letter are rejected at 5 % about 5 % of the time; a 10-point
    preference for A over 200 questions almost always. 400 simulated runs: the rejection rate of a test at its
    level lies within [0.025, 0.08] with probability above 0.99 (binomial, sd 0.011)."""
    rng = np.random.default_rng(7)
    gold = rotations_gold(200)
    null_rejections = sum(position_bias(rng.integers(0, 4, size=gold.shape), gold, list("ABCD"))["p_value"] < 0.05
                          for _ in range(400))
    assert 0.025 <= null_rejections / 400 <= 0.08
    preferring_a = lambda: np.where(rng.random(gold.shape) < 0.1, 0, rng.integers(0, 4, size=gold.shape))
    biased_rejections = sum(position_bias(preferring_a(), gold, list("ABCD"))["p_value"] < 0.05 for _ in range(100))
    assert biased_rejections >= 90


# ---- the robustness rows ---------------------------------------------------------------------------------------

def record_of(task_name: str, variant_name: str, metrics: dict) -> dict:
    return {task_name: {"metrics": metrics}, variant_name: {"metrics": metrics}}


def test_rows_pair_documents_and_use_the_paired_statistics():
    rng = np.random.default_rng(3)
    clean = rng.integers(0, 2, size=50).astype(float)
    perturbed = np.where(rng.random(50) < 0.2, 0.0, clean)  # some right answers lost
    samples = [{"task": "t", "doc_id": str(i), "scores": {"acc": v}} for i, v in enumerate(clean)]
    # The perturbed samples come in another order: they are paired by document id, not by position.
    samples += [{"task": "t~typos=0.1", "doc_id": str(i), "scores": {"acc": perturbed[i]}} for i in reversed(range(50))]
    metrics = {"acc": {"aggregation": "mean", "higher_is_better": True}}
    [row] = analyse([("t", "t~typos=0.1", parse_perturbation("typos=0.1"))],
                    record_of("t", "t~typos=0.1", metrics), samples, seed=0)
    expected = compare_paired(clean, perturbed, "mean")
    assert row["difference"]["value"] == pytest.approx(perturbed.mean() - clean.mean())
    assert row["difference"]["ci95"] == expected["interval"] and row["difference"]["p_value"] == expected["p_value"]
    assert row["difference"]["test"] == "mcnemar-mid-p"
    assert row["clean"]["value"] == clean.mean() and row["perturbed"]["value"] == perturbed.mean()


def test_layout_spread_is_best_minus_worst_layout():
    rows = [{"acc": 0.5, "acc_every_layout": 0.0, "acc_layout_a": 1.0, "acc_layout_b": 0.0,
             "acc_layout_c": float(i % 2)} for i in range(20)]
    samples = [{"task": "t", "doc_id": str(i), "scores": {"acc": 1.0}} for i in range(20)]
    samples += [{"task": "t~format=variants", "doc_id": str(i), "scores": row} for i, row in enumerate(rows)]
    metrics = {"acc": {"aggregation": "mean", "higher_is_better": True}}
    [row] = analyse([("t", "t~format=variants", parse_perturbation("format=variants"))],
                    record_of("t", "t~format=variants", metrics), samples, seed=0)
    assert row["spread"]["value"] == 1.0 and row["spread"]["best"] == "a" and row["spread"]["worst"] == "b"
    assert [layout["value"] for layout in row["layouts"]] == [1.0, 0.0, 0.5]


def test_mmlu_layouts_keep_the_answer_and_write_the_letters_they_ask_for():
    task = variant("mmlu_anatomy", "format=variants", num_fewshot=2)
    doc = task.docs()[0]
    for layout, layout_task in task.variants.items():
        requests = layout_task.requests(doc)
        letters = [r.continuation.strip() for r in requests]
        prompt = requests[0].context
        assert all(f"{letter}" in prompt.question for letter in letters), layout
        # The few-shot answers are written in the layout's letters too.
        assert all(answer in letters for _, answer in prompt.shots), layout
        assert layout_task.target(doc) == tasks.build("mmlu_anatomy").target(doc)
    assert len({variant.requests(doc)[0].context.question for variant in task.variants.values()}) == len(task.variants)
    assert task.variants["lm-eval"].requests(doc) == tasks.build("mmlu_anatomy", TaskOptions(num_fewshot=2)
                                                                 ).requests(doc)


def test_several_tasks_get_a_pooled_row_over_all_their_documents():
    metrics = {"acc": {"aggregation": "mean", "higher_is_better": True}}
    records, samples, variants = {}, [], []
    perturbation = parse_perturbation("case=lower")
    for task, right in (("a", [1, 1, 0, 1]), ("b", [0, 0, 1])):
        records.update(record_of(task, f"{task}~case=lower", metrics))
        variants.append((task, f"{task}~case=lower", perturbation))
        samples += [{"task": task, "doc_id": str(i), "scores": {"acc": float(v)}} for i, v in enumerate(right)]
        samples += [{"task": f"{task}~case=lower", "doc_id": str(i), "scores": {"acc": 0.0}} for i in range(len(right))]
    rows = analyse(variants, records, samples, seed=0)
    assert [row["task"] for row in rows] == ["a", "b", "all 2 tasks"]
    assert rows[2]["n"] == 7 and rows[2]["clean"]["value"] == pytest.approx(4 / 7)
    assert rows[2]["difference"]["value"] == pytest.approx(-4 / 7)
    assert rows[2]["variants"] == ["a~case=lower", "b~case=lower"]


def test_cochrans_q_is_mcnemars_chi_square_for_two_layouts_and_its_textbook_form_for_more():
    from harness.robustness.analysis import layouts_differ

    rng = np.random.default_rng(5)
    two = rng.integers(0, 2, size=(60, 2)).astype(float)
    b = np.sum((two[:, 0] == 1) & (two[:, 1] == 0))
    c = np.sum((two[:, 0] == 0) & (two[:, 1] == 1))
    assert layouts_differ(two)["statistic"] == pytest.approx((b - c) ** 2 / (b + c))
    six = rng.integers(0, 2, size=(80, 6)).astype(float)
    rows, columns, k = six.sum(axis=1), six.sum(axis=0), 6
    textbook = k * (k - 1) * np.sum((columns - columns.mean()) ** 2) / (k * rows.sum() - np.sum(rows ** 2))
    result = layouts_differ(six)
    assert result["test"] == "cochran-q" and result["statistic"] == pytest.approx(textbook)
    assert layouts_differ(np.ones((10, 6)))["p_value"] == 1.0
    # One layout that loses half the right answers is a difference the test sees.
    right = np.ones((80, 6))
    right[::2, 3] = 0
    assert layouts_differ(right)["p_value"] < 1e-6


def test_the_worst_case_row_takes_each_documents_worst_over_clean_and_every_perturbation():
    """HELM's robustness: per document the worst of the clean score, each text perturbation's and the worst
    order's; here document 0 survives everything, 1 fails a typo, 2 fails one order, 3 was wrong already."""
    metrics = {"acc": {"aggregation": "mean", "higher_is_better": True}}
    clean, typos, every_order = [1, 1, 1, 0], [1, 0, 1, 0], [1, 1, 0, 0]
    samples = [{"task": "t", "doc_id": str(i), "scores": {"acc": float(v)}} for i, v in enumerate(clean)]
    samples += [{"task": "t~typos=0.1", "doc_id": str(i), "scores": {"acc": float(v)}} for i, v in enumerate(typos)]
    samples += [{"task": "t~choices=permute", "doc_id": str(i),
                 "scores": {"acc": 0.5, "consistency": 0.0, "acc_every_order": float(v), "acc_order_0": 1.0,
                            "acc_order_1": 0.0, "chosen": [0, 0], "gold": [0, 1]}} for i, v in enumerate(every_order)]
    records = {**record_of("t", "t~typos=0.1", metrics), "t~choices=permute": {"metrics": metrics}}
    rows = analyse([("t", "t~typos=0.1", parse_perturbation("typos=0.1")),
                    ("t", "t~choices=permute", parse_perturbation("choices=permute"))], records, samples, seed=0)
    worst = rows[-1]
    assert worst["perturbation"] == "worst of 2" and worst["n"] == 4
    assert worst["clean"]["value"] == 0.75 and worst["perturbed"]["value"] == 0.25
    assert worst["difference"]["value"] == -0.5 and worst["difference"]["test"] == "mcnemar-mid-p"
