"""The response cache: every model response, stored in an embedded SQLite database as it arrives, so that an
interrupted run resumes where it stopped and a repeated command recomputes nothing.

An entry is keyed by two sha256 digests, and nothing else can reach it:
  - the model key: the model's fingerprint (its weights and variant), the implementation that runs it (ours or
    transformers', which must never answer for each other), dtype, device, and how prompts are written
    (chat template on or off, the template's sha256, the system prompt, few-shot as multi-turn), and FORMAT;
  - the request key: the request's kind and every field of it, its context already rendered to the text the
    model reads, and for a sampled generation its random stream (the run's seed and the request's occurrence).
So a different model, variant, dtype or prompt never hits another's entries. FORMAT changes whenever the engine's
numbers may change, which leaves every older entry unreachable.

The database is in WAL mode: a reader (another run, a test watching progress) never blocks the writer. The
evaluator commits once per chunk of requests (harness/engine/evaluator.py), so a run killed at any point keeps every
chunk it finished, each whole, and loses at most the chunk in flight.

It lives at $HARNESS_HOME/cache/responses.sqlite unless $HARNESS_CACHE_DB names another file.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.engine.requests import GenerateRequest, LoglikelihoodRequest, LoglikelihoodResult, Request
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


def request_key(request: Request, seed: int, occurrence: int) -> str:
    """Greedy requests ignore the seed; a sampled one's text depends on its stream, so the stream is in the key."""
    sampled = isinstance(request, GenerateRequest) and request.temperature > 0
    stream = [seed, occurrence] if sampled else None
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
