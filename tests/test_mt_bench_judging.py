"""MT-Bench's judging protocol (tasks/mt_bench_judging.py) against FastChat's own code: the judge conversations of
tests/golden/mt_bench_judge.json were recorded from fschat 0.2.36's run_judge_single and run_judge_pair
(bench/mt_bench_judge_golden.py), one question of each category, both turns, single grading and pairwise; ours
must equal them byte for byte, and read every recorded judgment as FastChat read it."""

import json
from pathlib import Path

import pytest

from tasks.mt_bench_judging import (
    DATA,
    JUDGE_MAX_TOKENS,
    JUDGE_TEMPERATURE,
    judge_messages,
    load_judge_prompts,
    pairwise_prompt,
    parse_rating,
    parse_verdict,
    prompt_name,
    single_prompt,
)

GOLDEN = json.loads((Path(__file__).parent / "golden" / "mt_bench_judge.json").read_text(encoding="utf-8"))
QUESTIONS = {q["question_id"]: q for q in map(json.loads, (DATA / "question.jsonl").read_text().splitlines())}
REFERENCES = {r["question_id"]: r["choices"][0]["turns"]
              for r in map(json.loads, (DATA / "reference_answer_gpt-4.jsonl").read_text().splitlines())}


def test_the_golden_file_covers_every_category_turn_and_kind():
    cases = {(c["category"], c["turn"], c["kind"]) for c in GOLDEN["conversations"]}
    categories = {q["category"] for q in QUESTIONS.values()}
    assert len(categories) == 8 and cases == {(c, t, k) for c in categories for t in (1, 2)
                                                for k in ("single", "pairwise")}
    assert {c["prompt"] for c in GOLDEN["conversations"]} == set(load_judge_prompts())  # all eight prompts


@pytest.mark.parametrize("case", GOLDEN["conversations"],
                         ids=lambda c: f"{c['category']}-turn{c['turn']}-{c['kind']}")
def test_the_judge_reads_what_fastchat_sends_byte_for_byte(case):
    prompts = load_judge_prompts()
    name = prompt_name(case["kind"], case["category"], case["turn"])
    assert name == case["prompt"]
    question = QUESTIONS[case["question_id"]]["turns"]
    references = REFERENCES[case["question_id"]] if case["category"] in ("math", "reasoning", "coding") else None
    if case["kind"] == "single":
        user = single_prompt(prompts[name], question, case["answer"], case["turn"], references)
    else:
        user = pairwise_prompt(prompts[name], question, case["answer_a"], case["answer_b"], case["turn"], references)
    assert judge_messages(prompts[name], user) == case["conversation"]["messages"]
    assert (JUDGE_TEMPERATURE, JUDGE_MAX_TOKENS) == (case["conversation"]["temperature"],
                                                     case["conversation"]["max_tokens"])


@pytest.mark.parametrize("case", GOLDEN["parsing"], ids=lambda c: c["judgment"][:30])
def test_judgments_are_read_as_fastchat_reads_them(case):
    rating = parse_rating(case["judgment"])
    assert (-1 if rating is None else rating) == case["rating"]
    verdict = parse_verdict(case["judgment"])
    assert ("error" if verdict is None else verdict) == case["verdict"]
