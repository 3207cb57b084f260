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
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from harness.engine.prompts import Prompt
from harness.engine.requests import GenerateRequest
from harness.engine.task import Doc, Metric, Perturbable, Task
from harness.errors import UserError
from tasks.base import DATA_DIR, read_jsonl
from tasks.scoring import exact_match as lm_eval_exact_match
from tasks.scoring import regex_extract

VERSION = "3.0"  # lm-eval's gsm8k and gsm8k_cot versions whose definitions this reproduces
LIST_ORDER = 3  # after GLUE in `harness list tasks`
FEWSHOT_SEED = 1234  # lm-eval's default --fewshot_random_seed, and ours: the run's --seed defaults to it
MAX_NEW_TOKENS = 256  # lm-eval's default max_gen_toks
STRICT_PATTERN = r"#### (\-?[0-9\.\,]+)"
STRICT_PATTERN_COT = r"The answer is (\-?[0-9\.\,]+)."
FLEXIBLE_PATTERN = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
IGNORED = [",", r"\$", r"(?s).*#### ", r"\.$"]


def exact_match(answer: str, reference: str) -> float:
    """lm-eval's exact_match with gsm8k.yaml's options: case and the IGNORED patterns do not count."""
    return lm_eval_exact_match(answer, reference, regexes_to_ignore=IGNORED, ignore_case=True)


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
        strict = regex_extract(STRICT_PATTERN_COT if self.chain_of_thought else STRICT_PATTERN, response, 0)
        flexible = regex_extract(FLEXIBLE_PATTERN, response, -1)
        return {"exact_match,strict-match": exact_match(strict, reference),
                "exact_match,flexible-extract": exact_match(flexible, reference),
                "extracted": {"strict-match": strict, "flexible-extract": flexible}}

    def target(self, doc: Doc) -> str:
        answer = doc.fields["answer"]
        return answer.split("####")[-1].strip() if self.chain_of_thought else answer

    def data_files(self) -> list[Path]:
        pool = "cot_exemplars.jsonl" if self.chain_of_thought else "train.jsonl"
        return [DATA_DIR / "gsm8k" / "test.jsonl"] + ([DATA_DIR / "gsm8k" / pool] if self.num_fewshot else [])

    def perturbable(self) -> Perturbable:
        return Perturbable(text_fields=("question",))  # never the answer, which holds the gold number

    def fewshot_ids(self) -> list[str]:
        if self.chain_of_thought:
            return [f"cot_exemplars:{i}" for i in range(self.num_fewshot)]
        return [f"train: random.Random({self.fewshot_seed}).sample(train, {self.num_fewshot}) per test document, "
                "in document order (lm-eval's default sampler)"] if self.num_fewshot else []


def register(tasks: dict, groups: dict) -> None:
    tasks["gsm8k"] = lambda options: GSM8K(name="gsm8k", num_fewshot=options.fewshot(5),
                                                 fewshot_seed=options.fewshot_seed)
    tasks["gsm8k_cot"] = lambda options: GSM8K(name="gsm8k_cot", chain_of_thought=True,
                                                num_fewshot=options.fewshot(8))
