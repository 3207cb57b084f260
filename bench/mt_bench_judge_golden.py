"""Writes tests/golden/mt_bench_judge.json with FastChat's own judging code: the judge conversations FastChat builds for
MT-Bench answers and how it reads judgments back, for the golden test of our implementation
(tests/test_mt_bench_judging.py). Needs FastChat (`pip install --no-deps fschat==0.2.36` and what
fastchat.llm_judge.common imports), which the test suite does not: the file is committed.

    FSCHAT_VENV/bin/python bench/mt_bench_judge_golden.py tasks/data/mt_bench tests/golden/mt_bench_judge.json

FastChat's API call is replaced by one that records the conversation it was given and answers a chosen judgment,
so that everything else (prompt choice, template filling, the conversation, parsing) is FastChat's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fastchat.llm_judge import common

data, output = Path(sys.argv[1]), Path(sys.argv[2])
questions = {q["question_id"]: q for q in map(json.loads, (data / "question.jsonl").read_text().splitlines())}
references = {r["question_id"]: r for r in map(json.loads, (data / "reference_answer_gpt-4.jsonl").read_text().splitlines())}
prompts = common.load_judge_prompts(str(data / "judge_prompts.jsonl"))
# Judgments a judge may write, tricky ones included: FastChat's parse of each is recorded.
JUDGMENTS = ["The answer is correct. Rating: [[8]]", "Rating: [[7.5]]", "Rating: [6]", "I would give it a 9.",
             "[[3]] at first, but on reflection [[9]]", "[[A]]", "Both are good. [[C]]", "[[B]] ... or [[A]]",
             "no verdict here", "[[10]]"]

conversations = []


def fake_openai(model, conv, temperature, max_tokens, api_dict=None):
    conversations.append({"messages": conv.to_openai_api_messages(), "temperature": temperature,
                          "max_tokens": max_tokens})
    return fake_openai.judgment


common.chat_completion_openai = fake_openai


def answer(turns):
    return {"choices": [{"index": 0, "turns": turns}]}


prompt_cases, parse_cases = [], []
# One question of each category, both turns, single and pairwise: the conversation FastChat sends its judge.
by_category = {}
for question in questions.values():
    by_category.setdefault(question["category"], question)
for category, question in sorted(by_category.items()):
    qid = question["question_id"]
    reference = references.get(qid) if category in common.NEED_REF_CATS else None
    mine = answer([f"My first answer to {qid}, with {{braces}} and [[5]] inside.", f"My second answer to {qid}."])
    theirs = answer([f"Another first answer to {qid}.", f"Another second answer to {qid}."])
    fake_openai.judgment = "[[5]]"
    for multi_turn in (False, True):
        suffix = "-multi-turn" if multi_turn else ""
        single = common.Judge("gpt-4", prompts[("single-math-v1" if reference else "single-v1") + suffix],
                              ref_based=reference is not None, multi_turn=multi_turn)
        pair = common.Judge("gpt-4", prompts[("pair-math-v1" if reference else "pair-v2") + suffix],
                            ref_based=reference is not None, multi_turn=multi_turn)
        common.run_judge_single(question, mine, single, reference, multi_turn)
        prompt_cases.append({"kind": "single", "question_id": qid, "category": category,
                             "turn": 2 if multi_turn else 1, "prompt": single.prompt_template["name"],
                             "answer": mine["choices"][0]["turns"], "conversation": conversations[-1]})
        common.run_judge_pair(question, mine, theirs, pair, reference, multi_turn)
        prompt_cases.append({"kind": "pairwise", "question_id": qid, "category": category,
                             "turn": 2 if multi_turn else 1, "prompt": pair.prompt_template["name"],
                             "answer_a": mine["choices"][0]["turns"], "answer_b": theirs["choices"][0]["turns"],
                             "conversation": conversations[-1]})
# How FastChat reads judgments back, a rating and a verdict.
question = by_category["writing"]
single = common.Judge("gpt-4", prompts["single-v1"])
pair = common.Judge("gpt-4", prompts["pair-v2"])
for judgment in JUDGMENTS:
    fake_openai.judgment = judgment
    rating = common.run_judge_single(question, answer(["x", "y"]), single, None)[0]
    verdict = common.run_judge_pair(question, answer(["x", "y"]), answer(["z", "w"]), pair, None)[0]
    parse_cases.append({"judgment": judgment, "rating": rating, "verdict": verdict})
output.write_text(json.dumps({"source": "fschat 0.2.36 (fastchat/llm_judge/common.py), its API call replaced by one "
                                        "that records the conversation and answers a chosen judgment",
                              "conversations": prompt_cases, "parsing": parse_cases},
                             indent=1, ensure_ascii=False) + "\n")
print(f"{len(prompt_cases)} conversations, {len(parse_cases)} judgments -> {output}")
