"""The model interface: what the engine needs of a language model, and nothing more.

Every model the harness evaluates implements it: our reference implementations and transformers' (through the
torch base in harness/models/adapter.py), a model behind an OpenAI-compatible server (harness/models/openai_api.py),
and wrappers that add behaviour around any model without the engine knowing (the response cache,
harness/engine/cache.py, as lm-eval's CachingLM wraps an LM).

The three request methods share one signature. Each takes a list of requests of its kind and returns one response
per request, in order; `batch_size` None means the model's own policy (results never depend on it); `progress` is
called with the number of requests done as work finishes; `seed` and `occurrences` decide a sampled generation's
random stream (the run's seed, and how many identical requests came before it in its task; `stream_seed` below),
so that a text does not depend on batching; the two loglikelihood methods ignore them.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections import Counter
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Callable, Sequence

from harness.engine.requests import (
    GenerateRequest,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    Request,
    RollingLoglikelihoodRequest,
)

Progress = Callable[[float], None]


class LanguageModel(ABC):
    spec: str  # what the user typed: smollm2-135m:int8, hf:PATH, openai:MODEL@URL
    implementation: str  # which code computes the numbers (ours, transformers', a server): part of the identity
    device: Any  # where the model runs: a torch device (cpu for a remote model, whose work happens elsewhere)
    dtype: Any  # the numbers' type: a torch dtype, or "remote"

    # ---- the three requests ---------------------------------------------------------------------------------

    @abstractmethod
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest], batch_size: int | None = None,
                      progress: Progress | None = None, seed: int = 0,
                      occurrences: Sequence[int] | None = None) -> list[LoglikelihoodResult]:
        """log P(continuation | context) summed over the continuation's tokens, and whether every one of them is
        the model's greedy choice."""

    @abstractmethod
    def loglikelihood_rolling(self, requests: Sequence[RollingLoglikelihoodRequest], batch_size: int | None = None,
                              progress: Progress | None = None, seed: int = 0,
                              occurrences: Sequence[int] | None = None) -> list[float]:
        """log P(text), every token predicted exactly once, in windows of the model's length."""

    @abstractmethod
    def generate_until(self, requests: Sequence[GenerateRequest], batch_size: int | None = None,
                       progress: Progress | None = None, seed: int = 0,
                       occurrences: Sequence[int] | None = None) -> list[str]:
        """The continuation of each context, greedy or sampled, cut before the first stop string."""

    # ---- what the engine needs to know ----------------------------------------------------------------------

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """Identifies what computes the numbers (weights, variant, tokenizer...): the response cache's key."""

    @abstractmethod
    def info(self) -> dict:
        """What the run record says about the model (implementation, parameters, bytes, dtype, device...)."""

    def truncates(self, request: Request) -> bool:
        """Whether the model sees only the end of this request's prompt (cut from the left, as lm-eval does)."""
        return False

    def cannot_answer(self, request: Request) -> str | None:
        """Why the model cannot answer this kind of request (a server without prompt log-probabilities), or
        None. The engine asks before any work, so that a run fails at once rather than after an hour."""
        return None

    @property
    def sampling_scheme(self) -> str | None:
        """What decides a sampled generation's text besides the model, the request and its random stream (a
        speculative decoder reads the stream otherwise), or None: the response cache keys sampled answers by it."""
        return None

    @property
    def chat_template(self) -> str | None:
        """The chat template prompts are written through with --apply-chat-template, or None if it has none."""
        return None

    @abstractmethod
    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        """The conversation as the model's chat template writes it, ending where the assistant's reply begins."""

    def working_on(self, task: str) -> AbstractContextManager:
        """The requests sent inside this context are the named task's: a model that measures or counts its work
        (the profiler, the response cache) attributes it to the task."""
        return nullcontext()

    def close(self) -> None:
        """Releases what the model holds open (a database, a connection pool)."""


def method_for(model: LanguageModel, kind: type[Request]) -> Callable[..., list]:
    """The model's method that answers requests of this kind."""
    methods = {LoglikelihoodRequest: model.loglikelihood, RollingLoglikelihoodRequest: model.loglikelihood_rolling,
               GenerateRequest: model.generate_until}
    return methods[kind]


def occurrences_in(requests: Sequence[Request]) -> list[int]:
    """How many identical requests come before each one in the list: the occurrences a caller that sends a whole
    list in one call implies, so that n identical sampled requests draw n different streams."""
    seen: Counter = Counter()
    occurrences = []
    for request in requests:
        occurrences.append(seen[request.key])
        seen[request.key] += 1
    return occurrences


def stream_seed(seed: int, request_key: str, occurrence: int) -> int:
    """The seed of one sampled generation's random stream: every model draws it the same way, a local one for its
    torch generator and a remote one for the seed it sends, so that the cache's (seed, occurrence) names one text."""
    digest = hashlib.sha256(f"{seed}:{request_key}:{occurrence}".encode()).hexdigest()
    return int(digest[:15], 16)  # 60 bits: within every server's signed 64-bit seed


def non_finite(answer: Any) -> float | None:
    """The NaN or infinite log-probability in an answer (a loglikelihood result or a rolling sum), else None: an
    fp16 overflow or a broken checkpoint, which an argmax would silently read as choice 0."""
    value = getattr(answer, "logprob", answer)
    return value if isinstance(value, float) and not math.isfinite(value) else None
