"""MT-Bench's judging protocol, as FastChat's llm_judge runs it (lm-sys/FastChat, fastchat/llm_judge/common.py and
gen_judgment.py, commit 0e6d3e4b): which of its eight judge prompts grades which answer, the prompt the judge reads,
and how its judgment is read back. Facts carried over from FastChat (Apache-2.0), written here anew:

- Single-answer grading: `single-v1` for a first turn, `single-v1-multi-turn` for a second (the judge sees both
  turns and grades the second); categories math, reasoning and coding (NEED_REF_CATS) use `single-math-v1` and
  `single-math-v1-multi-turn`, which add GPT-4's reference answer (`ref_answer_1`, and `ref_answer_2` for the
  second turn).
- Pairwise comparison: `pair-v2`, `pair-v2-multi-turn`, `pair-math-v1`, `pair-math-v1-multi-turn`, the same way.
- The judge's conversation is the prompt's system message and the user prompt (the template's Python format
  fields filled), judged at temperature 0 with at most 2,048 new tokens (FastChat's OpenAI judge).
- A rating is the first match of `\\[\\[(\\d+\\.?\\d*)\\]\\]`, else of `\\[(\\d+\\.?\\d*)\\]`, read as a number; no
  match is a failed judgment (FastChat records -1). A verdict is "A" if "[[A]]" occurs in the judgment, else "B"
  for "[[B]]", else "tie" for "[[C]]", else a failed judgment ("error").
- A pairwise match is judged twice, the answers in both orders (gen_judgment.py's play_a_match_pair); its outcome
  (show_result.py, display_result_pairwise) is the winner both orders agree on, else a tie: a verdict that flips
  with the order, or a tie in the first order, is a tie. A match with a failed judgment in either order is left out.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).parent / "data" / "mt_bench"
JUDGE_PROMPTS_FILE = DATA / "judge_prompts.jsonl"
NEED_REFERENCE = ("math", "reasoning", "coding")  # FastChat's NEED_REF_CATS (its arena-hard-200 aside)
JUDGE_TEMPERATURE = 0.0
JUDGE_MAX_TOKENS = 2048
RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
RATING_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")


@dataclass(frozen=True)
class JudgePrompt:
    name: str  # single-v1, single-math-v1-multi-turn, pair-v2, ...
    kind: str  # "single" or "pairwise"
    system_prompt: str
    template: str  # Python format fields: {question}, {answer}, {ref_answer_1}, {question_1}, {answer_a_2}, ...
    output_format: str  # "[[rating]]" or "[[A]]"


def load_judge_prompts(path: Path = JUDGE_PROMPTS_FILE) -> dict[str, JudgePrompt]:
    prompts = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        prompts[row["name"]] = JudgePrompt(row["name"], row["type"], row["system_prompt"], row["prompt_template"],
                                           row["output_format"])
    return prompts


def prompt_name(kind: str, category: str, turn: int) -> str:
    """The judge prompt FastChat uses for an answer of this category at this turn (1 or 2)."""
    base = {"single": "single-v1", "pairwise": "pair-v2"}[kind]
    if category in NEED_REFERENCE:
        base = {"single": "single-math-v1", "pairwise": "pair-math-v1"}[kind]
    return base + ("-multi-turn" if turn == 2 else "")


def single_prompt(prompt: JudgePrompt, questions: list[str], answers: list[str], turn: int,
                  references: list[str] | None) -> str:
    """The user prompt grading one model's answer at `turn`; `references` the reference answer's turns, for a
    prompt that takes them."""
    fields = reference_fields(references, turn)
    if turn == 2:
        return prompt.template.format(question_1=questions[0], question_2=questions[1], answer_1=answers[0],
                                      answer_2=answers[1], **fields)
    return prompt.template.format(question=questions[0], answer=answers[0], **fields)


def pairwise_prompt(prompt: JudgePrompt, questions: list[str], answers_a: list[str], answers_b: list[str],
                    turn: int, references: list[str] | None) -> str:
    """The user prompt comparing two models' answers at `turn`, A first."""
    fields = reference_fields(references, turn)
    if turn == 2:
        return prompt.template.format(question_1=questions[0], question_2=questions[1], answer_a_1=answers_a[0],
                                      answer_b_1=answers_b[0], answer_a_2=answers_a[1], answer_b_2=answers_b[1],
                                      **fields)
    return prompt.template.format(question=questions[0], answer_a=answers_a[0], answer_b=answers_b[0], **fields)


def judge_messages(prompt: JudgePrompt, user_prompt: str) -> list[dict[str, str]]:
    """The conversation the judge reads: the prompt's system message, then the filled-in user prompt."""
    return [{"role": "system", "content": prompt.system_prompt}, {"role": "user", "content": user_prompt}]


def reference_fields(references: list[str] | None, turn: int) -> dict[str, str]:
    if references is None:
        return {}
    return {"ref_answer_1": references[0], **({"ref_answer_2": references[1]} if turn == 2 else {})}


def parse_rating(judgment: str) -> float | None:
    """The judge's rating, or None where FastChat finds none (it records -1)."""
    match = RATING.search(judgment) or RATING_BACKUP.search(judgment)
    return float(ast.literal_eval(match.group(1))) if match else None


def parse_verdict(judgment: str) -> str | None:
    """"A", "B" or "tie", or None where FastChat finds no verdict ("error")."""
    for mark, verdict in (("[[A]]", "A"), ("[[B]]", "B"), ("[[C]]", "tie")):
        if mark in judgment:
            return verdict
    return None


# Who a verdict names: in the first order model 1's answer is A, in the second model 2's.
WINNER_A_FIRST, WINNER_B_FIRST = {"A": "model_1", "B": "model_2"}, {"A": "model_2", "B": "model_1"}


def match_outcome(first: str | None, second: str | None) -> str | None:
    """The outcome of a pairwise match from its two verdicts: `first` with model 1's answer as A, `second` with
    model 2's as A (each "A", "B", "tie", or None for a failed judgment). "model_1", "model_2" or "tie", or None when
    either judgment failed (FastChat drops the match)."""
    if first is None or second is None:
        return None
    first_winner = WINNER_A_FIRST.get(first, first)
    second_winner = WINNER_B_FIRST.get(second, second)
    if first_winner == "tie" or first_winner != second_winner:
        return "tie"
    return first_winner
