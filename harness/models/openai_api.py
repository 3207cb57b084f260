"""The `openai:MODEL@URL` adapter: a model behind an OpenAI-compatible server (vLLM, TGI, `harness serve`).

- generate_until: /v1/completions with the prompt; with --apply-chat-template, /v1/chat/completions with the
  messages (the server applies its own template).
- loglikelihood: /v1/completions with echo, max_tokens 0 and logprobs, which vLLM and `harness serve` answer: the
  log-probability of every prompt token. The continuation's tokens are those that start at or after the end of
  the context (text_offset), after the context's trailing whitespace moves to the continuation, as lm-eval does.
  A server that cannot echo log-probabilities stops the run with the task and the missing capability named.
- loglikelihood_rolling is not offered: it needs the model's tokenizer to cut windows, which a server hides.

A generation sends the seed of its own random stream (harness.engine.model.stream_seed: the run's seed, the
request and its occurrence), so that the n samples of a problem differ and a rerun draws the same texts.

Requests go out concurrently (HARNESS_OPENAI_CONCURRENCY, default 8), each retried with exponential backoff on
429, 5xx, timeouts (HARNESS_OPENAI_TIMEOUT seconds, default 300) and dropped connections (Retry-After is
honoured). The API key comes from OPENAI_API_KEY.
Responses go through the response cache like any model's, so an interrupted remote run resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

import httpx
import torch

from harness.engine.model import LanguageModel, Progress, occurrences_in, stream_seed
from harness.engine.requests import (
    GenerateRequest,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    RollingLoglikelihoodRequest,
)
from harness.errors import CapabilityMissing, UserError
from harness.models.lm_eval_tokens import move_trailing_whitespace
from harness.systems.profiler import Profiler

RETRIES = 6
BACKOFF_S = 0.5  # the first wait; it doubles each retry, with jitter, up to MAX_BACKOFF_S
MAX_BACKOFF_S = 30.0
TIMEOUT_S = 300.0  # per call; HARNESS_OPENAI_TIMEOUT overrides it
# The fields of a /v1/models entry that describe the model itself (OpenAI: id, owned_by; vLLM adds root, the
# weights' path or repository, parent, for a LoRA adapter its base, and max_model_len).
IDENTIFYING_FIELDS = ("id", "owned_by", "root", "parent", "max_model_len")


def text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class OpenAIAdapter(LanguageModel):
    implementation = "openai-api"

    def __init__(self, spec: str, served_model: str, base_url: str, revision: str | None = None, progress=print,
                 profiler: Profiler | None = None):
        self.spec, self.served_model, self.base_url = spec, served_model, base_url.rstrip("/")
        self.revision, self.progress = revision, progress
        self.profiler = profiler  # times each task's wall clock; the server's batches are not seen from here
        self.device, self.dtype = torch.device("cpu"), "remote"  # the model runs elsewhere; this process waits
        self.chat = False  # set by apply_chat_template: prompts are then message lists for chat completions
        self._echoes: bool | None = None  # whether the server scores prompts (echo with logprobs), once probed
        self.concurrency = int(os.environ.get("HARNESS_OPENAI_CONCURRENCY", "8"))
        headers = {"Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}"} if os.environ.get("OPENAI_API_KEY") \
            else {}
        timeout = float(os.environ.get("HARNESS_OPENAI_TIMEOUT", TIMEOUT_S))
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        listing = self._served_models()
        self.served = [entry.get("id") for entry in listing]
        if served_model not in self.served:
            served = ", ".join(map(str, self.served)) or "no model"
            raise UserError(f"{base_url} serves {served}, not {served_model!r}")
        # What the listing says about the model beyond its name (vLLM: root, parent, max_model_len), keeping out
        # fields that change by the request (vLLM's `created` is the time of the listing, `permission` has fresh ids).
        entry = next(entry for entry in listing if entry.get("id") == served_model)
        self.listing = {key: entry[key] for key in IDENTIFYING_FIELDS if isinstance(entry.get(key), (str, int))}
        self._system_fingerprint: str | None | bool = False  # False: not asked yet; None: the server gives none
        self._warned = False

    # ---- what the engine reads ---------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """No weights to hash: what the server says about the model stands for them (its listing's identifying
        fields and its system_fingerprint), with the revision the user pinned. A server that says nothing beyond
        the name is keyed on name and URL, with a warning."""
        system = self.system_fingerprint
        if system is None and not set(self.listing) - {"id", "owned_by"} and self.revision is None and not self._warned:
            self._warned = True
            self.progress(f"warning: {self.base_url} says nothing that identifies {self.served_model!r} beyond its "
                          f"name, so cached answers are reused while the name stays; pass --revision to key them on "
                          f"what the server runs")
        identity = [self.served_model, self.base_url, self.listing, system, self.revision]
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    @property
    def system_fingerprint(self) -> str | None:
        """The server's system_fingerprint (OpenAI's field for the backend configuration), from one 1-token
        completion the first time it is asked for; None where the server sends none (vLLM may not)."""
        if self._system_fingerprint is False:
            probe = {"model": self.served_model, "max_tokens": 1, "temperature": 0}
            try:
                reply = self._post("/completions", {**probe, "prompt": "Hello"})
            except UserError:  # a chat-only server
                try:
                    reply = self._post("/chat/completions", {**probe, "messages": [{"role": "user", "content": "Hi"}]})
                except UserError:
                    reply = {}  # the run's own requests will say what is wrong
            self._system_fingerprint = text_or_none(reply.get("system_fingerprint"))
        return self._system_fingerprint

    def info(self) -> dict:
        return {"implementation": self.implementation, "served_model": self.served_model, "url": self.base_url,
                "listing": self.listing, "system_fingerprint": self.system_fingerprint, "revision": self.revision,
                "dtype": "remote", "device": "remote"}

    @property
    def chat_template(self) -> str | None:
        return "the server's own chat template"

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        self.chat = True
        return json.dumps(messages, ensure_ascii=False)  # sent as they are to /v1/chat/completions

    def cannot_answer(self, request) -> str | None:
        """Why the server cannot answer this kind of request, or None; the evaluator asks before any work."""
        if isinstance(request, RollingLoglikelihoodRequest):
            return ("loglikelihood_rolling (perplexity): the openai adapter cannot cut the model's token windows "
                    "without its tokenizer; run the model locally")
        if isinstance(request, LoglikelihoodRequest) and self.chat:
            return ("loglikelihood, which chat completions cannot give (no prompt log-probabilities); run without "
                    "--apply-chat-template")
        if isinstance(request, LoglikelihoodRequest) and self._echoes is None:
            try:
                self._loglikelihood(LoglikelihoodRequest("Hello", " world"))
                self._echoes = True
            except UserError:
                self._echoes = False
        if isinstance(request, LoglikelihoodRequest) and not self._echoes:
            return (f"loglikelihood: {self.base_url} returns no prompt log-probabilities for echo=true, "
                    "max_tokens=0, logprobs=1 (vLLM and `harness serve` do)")
        return None

    # truncates: the server decides, and its window is not known here (the interface's default, False).

    def working_on(self, task: str):
        return self.profiler.task(task) if self.profiler else nullcontext()

    def close(self) -> None:
        self.client.close()

    # ---- requests ----------------------------------------------------------------------------------------

    # The server batches; `batch_size` does not apply to it.
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest], batch_size: int | None = None,
                      progress: Progress | None = None, seed: int = 0,
                      occurrences: Sequence[int] | None = None) -> list[LoglikelihoodResult]:
        return self._all(requests, self._loglikelihood, progress)

    def loglikelihood_rolling(self, requests: Sequence[RollingLoglikelihoodRequest], batch_size: int | None = None,
                              progress: Progress | None = None, seed: int = 0,
                              occurrences: Sequence[int] | None = None) -> list[float]:
        raise CapabilityMissing(self.cannot_answer(RollingLoglikelihoodRequest("")))

    def generate_until(self, requests: Sequence[GenerateRequest], batch_size: int | None = None,
                       progress: Progress | None = None, seed: int = 0,
                       occurrences: Sequence[int] | None = None) -> list[str]:
        # Each sample sends its own stream's seed, derived as a local model seeds its generator: one run seed sent
        # with every sample of a problem would make a seeded server return n identical texts.
        if occurrences is None:
            occurrences = occurrences_in(requests)
        streams = [(request, stream_seed(seed, request.key, occurrence))
                   for request, occurrence in zip(requests, occurrences)]
        return self._all(streams, lambda stream: self._generate(*stream), progress)

    def _all(self, requests: Sequence, one, progress) -> list[Any]:
        def answer(request):
            result = one(request)
            if progress:
                progress(1)
            return result

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(answer, requests))

    def _loglikelihood(self, request) -> LoglikelihoodResult:
        context, continuation = move_trailing_whitespace(request.context, request.continuation)
        reply = self._post("/completions", {"model": self.served_model, "prompt": context + continuation,
                                            "max_tokens": 0, "echo": True, "logprobs": 1, "temperature": 0})
        logprobs = (reply.get("choices") or [{}])[0].get("logprobs") or {}
        if not logprobs.get("token_logprobs") or not logprobs.get("text_offset"):
            raise CapabilityMissing(f"loglikelihood: {self.base_url} returned no prompt log-probabilities for "
                                    "echo=true, max_tokens=0, logprobs=1 (vLLM and `harness serve` do)")
        total, greedy = 0.0, True
        for offset, value, top in zip(logprobs["text_offset"], logprobs["token_logprobs"],
                                      logprobs.get("top_logprobs") or [None] * len(logprobs["text_offset"])):
            if offset < len(context):
                continue
            if value is None:
                raise CapabilityMissing("loglikelihood with an empty context: the server scores no first token")
            total += value
            greedy = greedy and (not top or value >= max(top.values()))
        return LoglikelihoodResult(total, greedy)

    def _generate(self, request: GenerateRequest, seed: int) -> str:
        body: dict[str, Any] = {"model": self.served_model, "max_tokens": request.max_tokens,
                                "temperature": request.temperature, "top_p": request.top_p, "seed": seed}
        if request.stop:
            body["stop"] = list(request.stop)
        if self.chat:
            reply = self._post("/chat/completions", {**body, "messages": json.loads(request.context)})
            text = reply["choices"][0]["message"]["content"] or ""
        else:
            text = self._post("/completions", {**body, "prompt": request.context})["choices"][0]["text"]
        for stop in request.stop:  # a server may return the text up to and including a stop string
            if stop and stop in text:
                text = text[:text.index(stop)]
        return text

    # ---- HTTP --------------------------------------------------------------------------------------------

    def _served_models(self) -> list[dict]:
        try:
            reply = self._request("GET", "/models")
        except httpx.HTTPError as error:
            raise UserError(f"cannot reach {self.base_url}: {error}") from None
        data = reply.get("data") if isinstance(reply, dict) else None
        return [entry for entry in data if isinstance(entry, dict)] if isinstance(data, list) else []

    def _post(self, path: str, body: dict) -> dict:
        try:
            reply = self._request("POST", path, body)
        except httpx.HTTPStatusError as error:
            raise UserError(f"{self.base_url}{path} answered {error.response.status_code}: "
                            f"{error.response.text[:200]}") from None
        except httpx.HTTPError as error:
            raise UserError(f"{self.base_url}{path} failed after {RETRIES} retries: {error}") from None
        if not isinstance(reply, dict):
            raise UserError(f"{self.base_url}{path} answered {type(reply).__name__}, not a JSON object")
        known, said = self._system_fingerprint, text_or_none(reply.get("system_fingerprint"))
        if isinstance(known, str) and said is not None and said != known:
            # Answers from two deployments would be mixed in one run, and cached under the first one's key.
            raise UserError(f"{self.base_url} changed its system_fingerprint during the run ({known} to {said}): the "
                            f"model behind {self.served_model!r} was redeployed; run again")
        return reply

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        """One call, retried on 429, 5xx, timeouts and broken connections, waiting longer each time."""
        for attempt in range(RETRIES + 1):
            try:
                response = self.client.request(method, path, json=body)
                response.raise_for_status()
                return response.json()
            except (httpx.TransportError, httpx.HTTPStatusError) as error:
                retryable = isinstance(error, httpx.TransportError) or error.response.status_code == 429 or \
                    error.response.status_code >= 500
                if not retryable or attempt == RETRIES:
                    raise
                wait = min(MAX_BACKOFF_S, BACKOFF_S * 2 ** attempt) * (0.5 + random.random() / 2)
                if isinstance(error, httpx.HTTPStatusError):
                    retry_after = error.response.headers.get("retry-after", "")
                    wait = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else wait
                time.sleep(wait)
        raise AssertionError("unreachable")
