"""MT-Bench (Zheng et al. 2023, "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena", arXiv 2306.05685): 80
two-turn questions in eight categories, each answer graded 1-10 by a judge model.

As FastChat's llm_judge runs it (lm-sys/FastChat, fastchat/llm_judge/gen_model_answer.py, gen_judgment.py --mode
single and show_result.py, commit 0e6d3e4b):
- a question's first turn is asked through the model's chat template; the second follows in the same conversation,
  after the model's own first answer, stripped of surrounding whitespace as FastChat keeps it;
- at most 1,024 new tokens a turn, at the category's temperature (FastChat's temperature_config: writing and
  roleplay 0.7, stem and humanities 0.1, the others greedy);
- each turn is graded by the judge with FastChat's prompts and rules (tasks/mt_bench_judging.py): the second turn's
  judge reads the whole conversation; math, reasoning and coding are graded against GPT-4's reference answer;
- a category's score is the mean of its readable ratings, both turns pooled ("pooled_mean"), and per turn; the
  benchmark's (group `mt_bench`) pools all 160 ratings, as show_result.py's "Average" does.
A judgment without a readable rating (FastChat records -1 and leaves it out of its means) is left out of the means
too, and counted: `judge_failures` is their share. Above --judge-max-failures the task fails rather than report a
score made of the few readable ones.

With --judge-scoring logprob (not FastChat's; for judges too small to follow its output format) the judge writes
nothing: its rating is the probability-weighted mean of 1-10, from the log-probabilities of the replies
"Rating: [[1]]" ... "Rating: [[10]]" (the format FastChat's prompts ask for) normalised over the ten, as G-Eval
scores (Liu et al. 2023, "G-Eval: NLG Evaluation using GPT-4 with Better Human Alignment", arXiv 2303.16634, sec.
2.3). It never fails to read; the record names the scoring, and a score made one way is not comparable with one
made the other.

Two choices differ from FastChat, where it cannot apply here: the model's own chat template writes the conversation
(FastChat picks a conversation template by model name and falls back to a one-shot example template for names it
does not know), and the judge is any model of the harness (--judge; the evaluated model by default), not GPT-4.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from harness.engine.judging import Judge
from harness.engine.prompts import Prompt
from harness.engine.requests import GenerateRequest
from harness.engine.task import Doc, Metric, Task
from harness.errors import UserError
from tasks.base import read_jsonl
from tasks.mt_bench_judging import (
    DATA,
    JUDGE_MAX_TOKENS,
    JUDGE_PROMPTS_FILE,
    JUDGE_TEMPERATURE,
    NEED_REFERENCE,
    judge_messages,
    load_judge_prompts,
    parse_rating,
    prompt_name,
    single_prompt,
)

QUESTIONS_FILE = DATA / "question.jsonl"
REFERENCES_FILE = DATA / "reference_answer_gpt-4.jsonl"
# FastChat's temperature_config, per category.
TEMPERATURE = {"writing": 0.7, "roleplay": 0.7, "reasoning": 0.0, "math": 0.0, "coding": 0.0, "extraction": 0.0,
               "stem": 0.1, "humanities": 0.1}
MAX_NEW_TOKENS = 1024  # FastChat's --max-new-token default
RATING_REPLIES = [f"Rating: [[{k}]]" for k in range(1, 11)]  # what --judge-scoring logprob weighs
LIST_ORDER = 9


def read_questions(category: str) -> list[dict]:
    return [row for row in read_jsonl(QUESTIONS_FILE) if row["category"] == category]


def read_references() -> dict[int, list[str]]:
    """GPT-4's answers (both turns) to the questions that are graded against a reference."""
    return {row["question_id"]: row["choices"][0]["turns"] for row in read_jsonl(REFERENCES_FILE)}


def probabilities(logprobs: list[float]) -> list[float]:
    """The replies' probabilities normalised over the replies (a softmax of their log-probabilities)."""
    top = max(logprobs)
    weights = [math.exp(value - top) for value in logprobs]
    return [weight / sum(weights) for weight in weights]


def expected_rating(logprobs: list[float]) -> float:
    """G-Eval's score: sum over k of P(rating k) * k, for the replies "Rating: [[1]]" ... "Rating: [[10]]"."""
    return sum(p * k for p, k in zip(probabilities(logprobs), range(1, 11)))


def rating_pair(rating: float | None) -> list[float]:
    """One judgment as a (total, count) sample of a pooled mean: an unreadable one counts nothing."""
    return [0.0, 0] if rating is None else [rating, 1]


@dataclass
class MTBench(Task):
    category: str = "writing"
    judge: Callable[[], Judge] | None = None
    max_failures: float = 0.2
    scoring: str = "generate"  # or "logprob"
    metrics: list[Metric] = field(default_factory=lambda: [
        Metric("score", "pooled_mean"), Metric("score_turn_1", "pooled_mean"),
        Metric("score_turn_2", "pooled_mean"), Metric("judge_failures", "pooled_mean", higher_is_better=False)])
    needs_chat_template: bool = True
    needs_judge: bool = True

    @cached_property
    def judge_model(self) -> Judge:
        if self.judge is None:
            raise UserError(f"{self.name} needs a judge model (--judge)")
        return self.judge()

    @cached_property
    def references(self) -> dict[int, list[str]]:
        return read_references() if self.category in NEED_REFERENCE else {}

    def docs(self) -> list[Doc]:
        return [Doc(str(row["question_id"]), {**row, "reference": self.references.get(row["question_id"])})
                for row in read_questions(self.category)]

    def turn(self, text: str, history: tuple[tuple[str, str], ...] = ()) -> GenerateRequest:
        return GenerateRequest(Prompt(text, shots=history, conversation=True), max_tokens=MAX_NEW_TOKENS,
                               temperature=TEMPERATURE[self.category])

    def requests(self, doc: Doc) -> list[GenerateRequest]:
        return [self.turn(doc.fields["turns"][0])]

    def follow_up(self, doc: Doc, responses: list[Any]) -> list[GenerateRequest]:
        if len(responses) == 1:  # the second turn reads the model's own first answer
            return [self.turn(doc.fields["turns"][1], ((doc.fields["turns"][0], responses[0].strip()),))]
        return []

    def score(self, doc: Doc, responses: list[Any]) -> dict[str, Any]:
        return self.score_all([(doc, responses)])[0]

    def score_all(self, answered: list[tuple[Doc, list[str]]]) -> list[dict[str, Any]]:
        """Every turn of every question judged in one call (the judge batches them), then the task fails if too
        many judgments have no readable rating."""
        prompts = load_judge_prompts()
        conversations = []
        for doc, responses in answered:
            answers = [response.strip() for response in responses]
            for turn in (1, 2):
                prompt = prompts[prompt_name("single", self.category, turn)]
                user = single_prompt(prompt, doc.fields["turns"], answers, turn, doc.fields["reference"])
                conversations.append(judge_messages(prompt, user))
        if self.scoring == "logprob":
            weights = self.judge_model.likelihoods(conversations, RATING_REPLIES, scope=f"{self.name}:judge")
            ratings = [expected_rating(logprobs) for logprobs in weights]
            judgments = [probabilities(logprobs) for logprobs in weights]
        else:
            judgments = self.judge_model(conversations, max_tokens=JUDGE_MAX_TOKENS,
                                         temperature=JUDGE_TEMPERATURE, scope=f"{self.name}:judge")
            ratings = [parse_rating(judgment) for judgment in judgments]
            self.refuse_unreadable(judgments, ratings)
        scores = []
        for position in range(0, len(ratings), 2):
            first, second = ratings[position:position + 2]
            readable = [rating for rating in (first, second) if rating is not None]
            scores.append({
                "score": [sum(readable), len(readable)],
                "score_turn_1": rating_pair(first),
                "score_turn_2": rating_pair(second),
                "judge_failures": [2 - len(readable), 2],
                "ratings": [first, second],
                # The judge's own text (hostile: shown escaped), or the probabilities it gave ratings 1-10.
                ("rating_probabilities" if self.scoring == "logprob" else "untrusted_judgments"):
                    judgments[position:position + 2],
            })
        return scores

    def refuse_unreadable(self, judgments: list[str], ratings: list[float | None]) -> None:
        failed = [judgment for judgment, rating in zip(judgments, ratings) if rating is None]
        if not judgments or len(failed) / len(judgments) <= self.max_failures:
            return
        spec = self.judge_model.identity()["spec"]
        raise UserError(f"{self.name}: the judge {spec} gave no readable [[rating]] in {len(failed)} of "
                        f"{len(judgments)} judgments ({len(failed) / len(judgments):.0%}, above --judge-max-failures "
                        f"{self.max_failures:.0%}), so no score is reported; its first such reply began "
                        f"{failed[0][:80]!r}. The answers and judgments are in the response cache: a run with "
                        "another --judge asks the model nothing again")

    def target(self, doc: Doc) -> list[str] | None:
        return doc.fields["reference"]

    def data_files(self) -> list[Path]:
        return [QUESTIONS_FILE, REFERENCES_FILE, JUDGE_PROMPTS_FILE]

    def settings(self) -> dict[str, Any]:
        judging = {"judge_scoring": "logprob", "judge_replies": RATING_REPLIES} if self.scoring == "logprob" else {
            "judge_scoring": "generate", "judge_temperature": JUDGE_TEMPERATURE, "judge_max_tokens": JUDGE_MAX_TOKENS,
            "judge_max_failures": self.max_failures}
        return {"temperature": TEMPERATURE[self.category], "max_new_tokens": MAX_NEW_TOKENS,
                "judge": self.judge_model.identity(), "judge_mode": "single", **judging}

    def breakdown(self) -> dict[str, Any]:
        return {"table": "mt_bench", "title": "MT-Bench by category",
                "metrics": ["score", "score_turn_1", "score_turn_2", "judge_failures"],
                "columns": {"category": self.category}, "chart": "score"}


def register(tasks: dict, groups: dict) -> None:
    for category in TEMPERATURE:
        tasks[f"mt_bench_{category}"] = (
            lambda options, category=category: MTBench(name=f"mt_bench_{category}", category=category,
                                                       judge=options.judge, max_failures=options.judge_max_failures,
                                                       scoring=options.judge_scoring))
    groups["mt_bench"] = [f"mt_bench_{category}" for category in TEMPERATURE]
