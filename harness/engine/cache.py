"""The response cache: every model response, stored in an embedded SQLite database as it arrives, so that an
interrupted run resumes where it stopped and a repeated command recomputes nothing.

An entry is keyed by two sha256 digests, and nothing else can reach it:
  - the model key: the model's fingerprint (its weights and variant), the implementation that runs it (ours or
    transformers', which must never answer for each other), dtype, device, and how prompts are written
    (chat template on or off, the template's sha256, the system prompt, few-shot as multi-turn), and FORMAT;
  - the request key: the request's kind and every field of it, its context already rendered to the text the
    model reads, and for a sampled generation its random stream (the run's seed and the request's occurrence) and
    the model's sampling scheme where it has one (speculative decoding reads the stream otherwise). Greedy answers
    do not depend on how they were decoded (with or without the KV cache, speculatively or not), and share entries.
So a different model, variant, dtype or prompt never hits another's entries. FORMAT changes whenever the engine's
numbers may change, which leaves every older entry unreachable.

`CachingModel` puts the cache around any model (as lm-eval's CachingLM wraps an LM): it implements the same
interface (harness/engine/model.py), answers what is stored, asks the model it wraps for the rest, and stores each
call's new responses in one commit. The evaluator sends one chunk of requests per call
(harness/engine/evaluator.py), so a run killed at any point keeps every chunk it finished, each whole, and loses at
most the chunk in flight. The database is in WAL mode: a reader (another run, a test watching progress) never
blocks the writer.

It lives at $HARNESS_HOME/cache/responses.sqlite unless $HARNESS_CACHE_DB names another file.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from harness.engine.model import LanguageModel, Progress, non_finite, occurrences_in
from harness.engine.requests import (
    GenerateRequest,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    Request,
    RollingLoglikelihoodRequest,
)
from harness.errors import UserError
from harness.settings import response_cache_path

FORMAT = "harness-responses/1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    PRIMARY KEY (model, request)
) WITHOUT ROWID;
"""


def model_key(fingerprint: str, implementation: str, dtype: str, device: str, prompt_format: dict) -> str:
    identity = {"format": FORMAT, "fingerprint": fingerprint, "implementation": implementation, "dtype": dtype,
                "device": device, "prompts": prompt_format}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def request_key(request: Request, seed: int, occurrence: int, sampling_scheme: str | None = None) -> str:
    """Greedy requests ignore the seed; a sampled one's text depends on its stream, and on how the model reads it
    (its sampling_scheme, e.g. speculative decoding), so both are in the key."""
    sampled = isinstance(request, GenerateRequest) and request.temperature > 0
    stream = None
    if sampled:
        stream = [seed, occurrence] if sampling_scheme is None else [seed, occurrence, sampling_scheme]
    payload = json.dumps([request.kind, asdict(request), stream], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def encode(response: Any) -> str:
    if isinstance(response, LoglikelihoodResult):
        return json.dumps([response.logprob, response.is_greedy])
    return json.dumps(response, ensure_ascii=False)  # a rolling log-probability (float) or a generation (str)


def decode(request: Request, stored: str) -> Any:
    value = json.loads(stored)
    if isinstance(request, LoglikelihoodRequest):
        return LoglikelihoodResult(float(value[0]), bool(value[1]))
    return value


class ResponseCache:
    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else response_cache_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.connection = sqlite3.connect(self.path, timeout=30)
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.executescript(SCHEMA)
            self.connection.execute("SELECT count(*) FROM (SELECT 1 FROM responses LIMIT 1)").fetchone()
        except (OSError, sqlite3.DatabaseError) as error:
            raise UserError(f"cannot use the response cache {self.path} ({error}); delete it, or run with "
                            "--no-cache") from None

    def get_many(self, model: str, keys: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        try:
            for start in range(0, len(keys), 500):  # SQLite limits the parameters of one statement
                chunk = keys[start:start + 500]
                rows = self.connection.execute(
                    f"SELECT request, response FROM responses WHERE model = ? AND request IN "
                    f"({','.join('?' * len(chunk))})", [model, *chunk])
                found.update(rows.fetchall())
        except sqlite3.DatabaseError as error:
            raise UserError(f"the response cache {self.path} is damaged ({error}); delete it, or run with "
                            "--no-cache") from None
        return found

    def put_many(self, model: str, entries: list[tuple[str, str]]) -> None:
        """Stores (request key, encoded response) pairs in one transaction: all of them, or none if killed."""
        with self.connection:
            self.connection.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)",
                                        [(model, key, response) for key, response in entries])

    def close(self) -> None:
        self.connection.close()


class CachingModel(LanguageModel):
    """Any model, with its responses kept in a ResponseCache. `prompt_settings` (how prompts are written: chat
    template, system prompt...) enters the model key: the same request text under another template is another
    question. `hits` and `computed` count responses per task (as named by working_on)."""

    def __init__(self, model: LanguageModel, store: ResponseCache, prompt_settings: dict):
        self.model = model
        self.store = store
        self.key = model_key(model.fingerprint, model.implementation, str(model.dtype), str(model.device),
                             prompt_settings)
        self.hits: dict[str, int] = defaultdict(int)
        self.computed: dict[str, int] = defaultdict(int)
        self.task = ""

    # ---- the three requests: stored answers, the rest from the model ----------------------------------------

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest], batch_size: int | None = None,
                      progress: Progress | None = None, seed: int = 0,
                      occurrences: Sequence[int] | None = None) -> list[LoglikelihoodResult]:
        return self._answer(self.model.loglikelihood, requests, batch_size, progress, seed, occurrences)

    def loglikelihood_rolling(self, requests: Sequence[RollingLoglikelihoodRequest], batch_size: int | None = None,
                              progress: Progress | None = None, seed: int = 0,
                              occurrences: Sequence[int] | None = None) -> list[float]:
        return self._answer(self.model.loglikelihood_rolling, requests, batch_size, progress, seed, occurrences)

    def generate_until(self, requests: Sequence[GenerateRequest], batch_size: int | None = None,
                       progress: Progress | None = None, seed: int = 0,
                       occurrences: Sequence[int] | None = None) -> list[str]:
        return self._answer(self.model.generate_until, requests, batch_size, progress, seed, occurrences)

    def _answer(self, method: Callable[..., list], requests: Sequence[Request], batch_size: int | None,
                progress: Progress | None, seed: int, occurrences: Sequence[int] | None) -> list[Any]:
        """A stored response is never recomputed; the new ones are stored in one commit."""
        # Without occurrences, identical requests count as the model they wrap counts them: each its own stream.
        occurrences = list(occurrences) if occurrences is not None else occurrences_in(requests)
        scheme = self.model.sampling_scheme
        keys = [request_key(request, seed, o, scheme) for request, o in zip(requests, occurrences)]
        stored = self.store.get_many(self.key, keys)
        answers = [decode(request, stored[key]) if key in stored else None for request, key in zip(requests, keys)]
        missing = [position for position, key in enumerate(keys) if key not in stored]
        if progress and len(requests) > len(missing):
            progress(len(requests) - len(missing))
        if missing:
            computed = method([requests[p] for p in missing], batch_size=batch_size, progress=progress, seed=seed,
                              occurrences=[occurrences[p] for p in missing])
            for position, answer in zip(missing, computed):
                answers[position] = answer
            # A non-finite answer is never kept: the evaluator refuses it, and a later run must compute it again.
            self.store.put_many(self.key, [(keys[p], encode(answers[p])) for p in missing
                                           if non_finite(answers[p]) is None])
        self.hits[self.task] += len(requests) - len(missing)
        self.computed[self.task] += len(missing)
        return answers

    @contextmanager
    def working_on(self, task: str) -> Iterator[None]:
        self.task = task
        with self.model.working_on(task):
            yield

    # ---- everything else is the wrapped model's --------------------------------------------------------------

    @property
    def spec(self) -> str:  # type: ignore[override]
        return self.model.spec

    @property
    def implementation(self) -> str:  # type: ignore[override]
        return self.model.implementation

    @property
    def device(self) -> Any:  # type: ignore[override]
        return self.model.device

    @property
    def dtype(self) -> Any:  # type: ignore[override]
        return self.model.dtype

    @property
    def fingerprint(self) -> str:
        return self.model.fingerprint

    def info(self) -> dict:
        return self.model.info()

    def truncates(self, request: Request) -> bool:
        return self.model.truncates(request)

    def cannot_answer(self, request: Request) -> str | None:
        return self.model.cannot_answer(request)

    @property
    def sampling_scheme(self) -> str | None:
        return self.model.sampling_scheme

    @property
    def chat_template(self) -> str | None:
        return self.model.chat_template

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        return self.model.apply_chat_template(messages)

    def close(self) -> None:
        self.store.close()
        self.model.close()
