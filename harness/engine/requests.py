"""The requests a task asks of a model: the one seam that tasks and model adapters share.

Three kinds, after lm-evaluation-harness's proven cut:
  - LoglikelihoodRequest(context, continuation) -> LoglikelihoodResult(logprob, is_greedy)
  - RollingLoglikelihoodRequest(text) -> float, the summed log-probability of every token of `text`
  - GenerateRequest(context, stop, max_tokens, temperature, top_p) -> str
Each request is a frozen dataclass; its `key` (sha256 of its fields) names it in samples.jsonl and, later, in the
response cache. Tasks may give a context as a `Prompt` (harness.engine.prompts); the evaluator renders it to text,
plain or through the model's chat template, before the model sees it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from harness.engine.prompts import Prompt


@dataclass(frozen=True)
class Request:
    @property
    def kind(self) -> str:
        return type(self).__name__

    @property
    def key(self) -> str:
        payload = json.dumps([self.kind, asdict(self)], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class LoglikelihoodRequest(Request):
    context: str | Prompt
    continuation: str


@dataclass(frozen=True)
class RollingLoglikelihoodRequest(Request):
    text: str


@dataclass(frozen=True)
class GenerateRequest(Request):
    context: str | Prompt
    stop: tuple[str, ...] = ()
    max_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0  # nucleus sampling: draw from the smallest set of tokens whose probability reaches top_p


@dataclass(frozen=True)
class LoglikelihoodResult:
    logprob: float
    is_greedy: bool  # every continuation token is the argmax of its position's logits
