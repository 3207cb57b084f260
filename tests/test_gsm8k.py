"""GSM8K: the prompt and few-shot draws as lm-eval makes them, and both answer extractions."""

from pathlib import Path

import pytest

import tasks
from harness.engine.task import TaskOptions
from harness.errors import UserError
from tasks.gsm8k import exact_match
from tasks.scoring import regex_extract as extract

GOLDEN = Path(__file__).parent / "golden"
STRICT = r"#### (\-?[0-9\.\,]+)"
FLEXIBLE = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"


def test_prompt_equals_lm_eval_byte_for_byte():
    # lm-eval 0.4.13's context for test doc 0: five train examples drawn by its default sampler (seed 1234).
    expected = (GOLDEN / "gsm8k_doc0.txt").read_text(encoding="utf-8")
    task = tasks.build("gsm8k")
    (request,) = task.requests(task.docs()[0])
    assert request.context.text() == expected
    assert request.stop == ("Question:", "</s>", "<|im_end|>") and request.max_tokens == 256
    assert request.temperature == 0.0


def test_few_shot_draws_follow_lm_eval_sampler_document_by_document():
    # The train rows in lm-eval's contexts for test docs 0-4 (its --log_samples output, matched back to
    # train.jsonl): one random.Random(1234).sample per document, in document order.
    lm_eval_draws = [[6374, 3610, 957, 61, 742], [7462, 6610, 4769, 286, 5501], [5677, 687, 806, 6279, 2905],
                     [1939, 142, 252, 6461, 129], [2835, 5311, 5105, 3966, 5044]]
    task = tasks.build("gsm8k")
    assert [task.shot_indices(i) for i in reversed(range(5))] == lm_eval_draws[::-1]  # any order of asking


def test_cot_prompt_equals_lm_eval_byte_for_byte():
    # lm-eval 0.4.13's own gsm8k_cot task (its fewshot_context for test doc 0, on the same data): the eight
    # exemplars of Wei et al. 2022 in order, then the question.
    expected = (GOLDEN / "gsm8k_cot_doc0.txt").read_text(encoding="utf-8")
    task = tasks.build("gsm8k_cot")
    doc = task.docs()[0]
    (request,) = task.requests(doc)
    assert request.context.text() == expected and expected.count("The answer is") == 8
    assert request.stop == ("Q:", "</s>", "<|im_end|>") and task.target(doc) == "18"


@pytest.mark.parametrize("response, strict, flexible", [
    ("She pays 2 * 500 = $1,000.\n#### 1,000", "1,000", "1,000"),
    ("So the total is $1,000.", "[invalid]", "$1,000."),  # strict needs '#### '
    ("The temperature drops 3 - 8 = -5 degrees.\n#### -5", "-5", "-5"),
    ("She has 7 apples and 12 pears, 19 in all.", "[invalid]", "19"),  # the last number
    ("No numbers here.", "[invalid]", "[invalid]"),
    ("#### 42.\n\nQuestion: extra 7", "42.", "7"),
])
def test_both_extractions(response, strict, flexible):
    assert extract(STRICT, response, 0) == strict
    assert extract(FLEXIBLE, response, -1) == flexible


@pytest.mark.parametrize("answer, reference, expected", [
    ("1,000", "So she pays $1000.\n#### 1000", 1.0),  # commas and everything up to '#### ' are ignored
    ("$1,000.", "#### 1000", 1.0),  # '$' and a trailing '.' are ignored
    ("-5", "The change is -5.\n#### -5", 1.0),
    ("5", "#### -5", 0.0),  # the sign counts
    ("[invalid]", "#### 3", 0.0),
    ("1000.5", "#### 1000", 0.0),
])
def test_exact_match_normalizes_as_lm_eval(answer, reference, expected):
    assert exact_match(answer, reference) == expected


def test_score_reports_both_metrics_and_what_was_extracted():
    task = tasks.build("gsm8k")
    doc = task.docs()[0]  # answer 18
    scores = task.score(doc, [" She makes $18 a day.\n#### 18.0\n\n"])
    assert scores["exact_match,strict-match"] == 0.0  # "18.0" is not "18"
    assert scores["exact_match,flexible-extract"] == 0.0  # the last number is "18.0" too
    scores = task.score(doc, [" 9 * 2 = 18 dollars.\n#### 18"])
    assert scores["exact_match,strict-match"] == 1.0 and scores["exact_match,flexible-extract"] == 1.0
    assert scores["extracted"] == {"strict-match": "18", "flexible-extract": "18"}


def test_few_shot_count_is_checked_and_zero_shot_works():
    with pytest.raises(UserError, match="more than the 8 examples"):
        tasks.build("gsm8k_cot", TaskOptions(num_fewshot=9))
    task = tasks.build("gsm8k", TaskOptions(num_fewshot=0))
    doc = task.docs()[0]
    assert task.requests(doc)[0].context.text() == f"Question: {doc.fields['question']}\nAnswer:"
