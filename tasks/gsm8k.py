"""GSM8K (Cobbe et al., 2021): grade-school math word problems, answered by generation, scored by exact match.

Two tasks, each lm-evaluation-harness 0.4.13's definition (lm_eval/tasks/gsm8k/gsm8k.yaml, gsm8k-cot.yaml):

  gsm8k      5-shot: `Question: {question}\\nAnswer: {answer}\\n\\n` per example, the examples drawn from the train
             split as lm-eval's default sampler draws them (random.Random(1234), one `sample(train, k)` per test
             document, in document order), then `Question: {question}\\nAnswer:`. Greedy, at most 256 new tokens,
             stopping at "Question:" (or "</s>", "<|im_end|>", EOS).
  gsm8k_cot  8-shot: the chain-of-thought exemplars of Wei et al. 2022 as `Q: {question}\\nA: {reasoning}` (in
             order), then `Q: {question}\\nA:`. Stops at "Q:".

Both report two answer extractions, each then compared by exact match with the reference's final number:
  strict-match      gsm8k: the number after "#### "; gsm8k_cot: the number in "The answer is N."
  flexible-extract  the last number-like string in the response: last match of `(-?[$0-9.,]{2,})|(-?[0-9]+)`
Before comparing, both sides drop ",", "$", everything up to "#### ", a trailing "." and case. No match reads as
"[invalid]". Data: tasks/data/gsm8k (the original release), see its PROVENANCE.md.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.engine.prompts import Prompt
from harness.engine.requests import GenerateRequest
from tasks.base import DATA_DIR, Doc, Metric, Task, read_jsonl

VERSION = "3.0"  # lm-eval's gsm8k and gsm8k_cot versions whose definitions this reproduces
FEWSHOT_SEED = 1234  # lm-eval's default --fewshot_random_seed, and ours: the run's --seed defaults to it
MAX_NEW_TOKENS = 256  # lm-eval's default max_gen_toks
FALLBACK = "[invalid]"
FLEXIBLE_PATTERN = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
IGNORED = [",", r"\$", r"(?s).*#### ", r"\.$"]


def extract(pattern: str, text: str, group_select: int) -> str:
    """lm-eval's regex filter: the chosen match of `pattern` (for several groups, the first non-empty one)."""
    matches = re.findall(pattern, text)
    if not matches:
        return FALLBACK
    match = matches[group_select]
    if isinstance(match, tuple):
        match = next((group for group in match if group), FALLBACK)
    return match.strip()


def normalize(text: str) -> str:
    for pattern in IGNORED:
        text = re.sub(pattern, "", text)
    return text.lower()


def exact_match(answer: str, reference: str) -> float:
    return float(normalize(answer) == normalize(reference))


@dataclass
class GSM8K(Task):
    chain_of_thought: bool = False
    fewshot_seed: int = FEWSHOT_SEED
    metrics: list[Metric] = field(default_factory=lambda: [Metric("exact_match,strict-match"),
                                                           Metric("exact_match,flexible-extract")])

    def __post_init__(self):
        self.version = VERSION
        available = len(self.exemplars) if self.chain_of_thought else len(self.train)
        if self.num_fewshot > available:
            raise UserError(f"{self.name}: --num-fewshot {self.num_fewshot} is more than the {available} examples")
        self._sampler = random.Random(self.fewshot_seed)
        self._draws: list[list[int]] = []

    @cached_property
    def train(self) -> list[dict]:
        return read_jsonl(DATA_DIR / "gsm8k" / "train.jsonl") if not self.chain_of_thought else []

    @cached_property
    def exemplars(self) -> list[dict]:
        return read_jsonl(DATA_DIR / "gsm8k" / "cot_exemplars.jsonl") if self.chain_of_thought else []

    def docs(self) -> list[Doc]:
        return [Doc(str(i), row) for i, row in enumerate(read_jsonl(DATA_DIR / "gsm8k" / "test.jsonl"))]

    def question(self, row: dict) -> str:
        return f"Q: {row['question']}\nA:" if self.chain_of_thought else f"Question: {row['question']}\nAnswer:"

    def shot_indices(self, doc_index: int) -> list[int]:
        """The train rows lm-eval's sampler gives the doc_index-th test document: its sampler is one
        random.Random(1234) whose sample(train, k) is called once per document, in document order."""
        if self.chain_of_thought:
            return list(range(self.num_fewshot))
        while len(self._draws) <= doc_index:
            self._draws.append(self._sampler.sample(range(len(self.train)), self.num_fewshot))
        return self._draws[doc_index]

    def prompt(self, doc: Doc) -> Prompt:
        pool = self.exemplars if self.chain_of_thought else self.train
        shots = tuple((self.question(pool[i]), pool[i]["answer"]) for i in self.shot_indices(int(doc.id)))
        return Prompt(self.question(doc.fields), shots)

    def requests(self, doc: Doc) -> list[GenerateRequest]:
        stop = "Q:" if self.chain_of_thought else "Question:"
        return [GenerateRequest(self.prompt(doc), stop=(stop, "</s>", "<|im_end|>"), max_tokens=MAX_NEW_TOKENS)]

    def score(self, doc: Doc, responses: list[str]) -> dict[str, Any]:
        response, reference = responses[0], self.target(doc)
        strict_pattern = r"The answer is (\-?[0-9\.\,]+)." if self.chain_of_thought else r"#### (\-?[0-9\.\,]+)"
        strict = extract(strict_pattern, response, 0)
        flexible = extract(FLEXIBLE_PATTERN, response, -1)
        return {"exact_match,strict-match": exact_match(strict, reference),
                "exact_match,flexible-extract": exact_match(flexible, reference),
                "extracted": {"strict-match": strict, "flexible-extract": flexible}}

    def target(self, doc: Doc) -> str:
        answer = doc.fields["answer"]
        return answer.split("####")[-1].strip() if self.chain_of_thought else answer

    def data_files(self) -> list[Path]:
        pool = "cot_exemplars.jsonl" if self.chain_of_thought else "train.jsonl"
        return [DATA_DIR / "gsm8k" / "test.jsonl"] + ([DATA_DIR / "gsm8k" / pool] if self.num_fewshot else [])

    def fewshot_ids(self) -> list[str]:
        if self.chain_of_thought:
            return [f"cot_exemplars:{i}" for i in range(self.num_fewshot)]
        return [f"train: random.Random({self.fewshot_seed}).sample(train, {self.num_fewshot}) per test document, "
                "in document order (lm-eval's default sampler)"] if self.num_fewshot else []

    def prompt_template(self) -> str:
        if self.chain_of_thought:
            template = "Q: {question}\\nA:| {answer}\\n\\n|stop Q:|strict The answer is N."
        else:
            template = "Question: {question}\\nAnswer:| {answer}\\n\\n|stop Question:|strict #### N"
        return template + "|flexible " + FLEXIBLE_PATTERN


def register(tasks: dict, groups: dict) -> None:
    tasks["gsm8k"] = lambda options: GSM8K(name="gsm8k", num_fewshot=options.fewshot(5),
                                                 fewshot_seed=options.fewshot_seed)
    tasks["gsm8k_cot"] = lambda options: GSM8K(name="gsm8k_cot", chain_of_thought=True,
                                                num_fewshot=options.fewshot(8))
