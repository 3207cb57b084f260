"""`harness serve`: any of our model specs behind an OpenAI-compatible HTTP server (FastAPI on uvicorn).

    POST /v1/completions        prompt (a string or a list of them), max_tokens, temperature, top_p, stop, seed,
                                n (samples of each prompt, in OpenAI's order: prompt by prompt), logprobs (the
                                chosen token's and that many alternatives at each position), stream; with echo
                                and max_tokens 0, each prompt token's log-probability (the first has none), its
                                text offset and its most likely alternatives: what a client needs to score a
                                continuation (vLLM answers the same way)
    POST /v1/chat/completions   messages, written through the model's chat template, then generated from
    GET  /v1/models             the one model served, under its spec
    GET  /health                200 while the engine runs
    GET  /metrics               Prometheus' text format (harness/serving/metrics.py)

Requests are served together by continuous batching (harness/serving/engine.py); every answer carries `usage`, and
a streamed one sends it in a last chunk when `stream_options.include_usage` asks. A request that does not fit the
model's window, or asks for what is not implemented, is a 400 (harness/serving/bodies.py); a full queue is a 429
with Retry-After; a client that disconnects has its sequences cancelled. With an API key (`--api-key` or
HARNESS_API_KEY), /v1 answers 401 without `Authorization: Bearer KEY`.

A sequence's random stream is seeded as the evaluation's adapter seeds it (the request's seed, the prompt, how many
identical sequences came before it in the request), so a sampled answer does not depend on what it was batched with.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from harness.engine.model import occurrences_in
from harness.engine.requests import GenerateRequest
from harness.serving.bodies import ChatBody, CompletionBody, SamplingBody
from harness.serving.engine import Engine, Event, QueueFull, Ticket
from harness.serving.guards import BodySizeLimit, CountAndAuthorize, error_body
from harness.serving.metrics import ServerMetrics

FINISH = {"eos": "stop", "stop": "stop", "length": "length"}
COMPLETION_DEFAULT_TOKENS = 16  # OpenAI's default max_tokens for completions
DISCONNECT_POLL_S = 0.5


@dataclass(frozen=True)
class ServerSettings:
    max_batch: int = 8
    max_queued: int = 256
    max_body_bytes: int = 4 << 20
    api_key: str | None = None


def make_app(adapter, settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    metrics = ServerMetrics()
    engine = Engine(adapter, settings.max_batch, settings.max_queued, metrics)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        engine.stop()

    app = FastAPI(title=f"harness serve: {adapter.spec}", lifespan=lifespan)
    app.state.engine = engine
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(CountAndAuthorize, api_key=settings.api_key, requests_counter=metrics.requests)  # outermost
    # OpenAI's field for "the backend configuration the model runs with": here, what decides our answers (weights,
    # tokenizer and config files, scoring code), so that a client's cache can tell a redeployed model.
    system_fingerprint = f"fp_{adapter.fingerprint[:16]}"

    @app.exception_handler(HTTPException)
    async def http_error(_request, error: HTTPException):
        return error_response(error.status_code, str(error.detail), error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_request, error: RequestValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "body"
        return error_response(400, f"{where}: {first.get('msg', 'invalid')}")

    @app.get("/health")
    def health() -> dict:
        if not engine.thread.is_alive():
            raise HTTPException(503, "the engine has stopped")
        return {"status": "ok"}

    @app.get("/metrics")
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.text(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": adapter.spec, "object": "model", "owned_by": "harness",
                                            "max_model_len": adapter.max_length}]}

    @app.post("/v1/completions")
    async def completions(body: CompletionBody, request: Request):
        if body.echo:
            return await score_prompts(body)
        prompts = body.prompts
        encoded = [adapter.encode(prompt) for prompt in prompts]
        max_tokens = check_room(encoded, body.max_tokens, COMPLETION_DEFAULT_TOKENS)
        return await answer(request, body, prompts, encoded, max_tokens, body.logprobs, chat=False)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody, request: Request):
        prompt = adapter.apply_chat_template([{"role": m.role, "content": m.text} for m in body.messages])
        encoded = [adapter.encode(prompt)]
        max_tokens = check_room(encoded, body.requested_tokens, None)
        top = (body.top_logprobs or 0) if body.logprobs else None
        return await answer(request, body, [prompt], encoded, max_tokens, top, chat=True)

    def check_room(encoded: list[list[int]], asked: int | None, default: int | None) -> int:
        """The max_tokens to use: as asked (or the default, or what the window leaves), refused where the prompt
        and it do not fit the model's window: a longer prompt would otherwise be cut without a word."""
        longest = max(len(tokens) for tokens in encoded)
        room = adapter.max_length - longest
        if room < 1:
            raise HTTPException(400, f"the prompt has {longest} tokens; this model's window is {adapter.max_length}")
        wanted = asked if asked is not None else min(default or room, room)
        if wanted > room:
            raise HTTPException(400, f"the prompt ({longest} tokens) and max_tokens ({wanted}) exceed this model's "
                                     f"window of {adapter.max_length} tokens")
        return wanted

    async def score_prompts(body: CompletionBody) -> dict:
        if not engine.batched:
            raise HTTPException(400, "echo with logprobs needs a reference model (this one has none)")
        choices = []
        for index, prompt in enumerate(body.prompts):
            logprobs = await asyncio.wrap_future(engine.call(lambda p=prompt: prompt_logprobs(adapter, p,
                                                                                              body.logprobs)))
            choices.append({"index": index, "text": prompt, "logprobs": logprobs, "finish_reason": "length"})
        usage = sum(len(choice["logprobs"]["tokens"]) for choice in choices)
        return {"id": f"cmpl-{secrets.token_hex(12)}", "object": "text_completion", "created": int(time.time()),
                "model": adapter.spec, "system_fingerprint": system_fingerprint, "choices": choices,
                "usage": {"prompt_tokens": usage, "completion_tokens": 0, "total_tokens": usage}}

    async def answer(request: Request, body: SamplingBody, prompts: list[str], encoded: list[list[int]],
                     max_tokens: int, top_logprobs: int | None, chat: bool):
        if (top_logprobs is not None or body.ignore_eos) and not engine.batched:
            raise HTTPException(400, "logprobs of generated tokens and ignore_eos need a reference model (this "
                                     "one has none)")
        if len(prompts) * body.n > settings.max_queued:
            raise HTTPException(400, f"{len(prompts)} prompts x n={body.n} is more sequences than this server "
                                     f"queues ({settings.max_queued})")
        seed = body.seed if body.seed is not None else secrets.randbits(60)
        requests = [GenerateRequest(prompt, stop=body.stops, max_tokens=max_tokens, temperature=body.temperature,
                                    top_p=body.top_p) for prompt in prompts for _ in range(body.n)]
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        tickets = [Ticket(encoded[index // body.n], generate_request, seed, occurrence,
                          deliver=lambda event, i=index: loop.call_soon_threadsafe(events.put_nowait, (i, event)),
                          top_logprobs=top_logprobs, ignore_eos=body.ignore_eos)
                   for index, (generate_request, occurrence) in enumerate(zip(requests, occurrences_in(requests)))]
        try:
            engine.submit(tickets)
        except QueueFull:
            raise HTTPException(429, "the server's queue is full; retry later", {"Retry-After": "1"}) from None
        reply = Reply(adapter, body, encoded, tickets, chat, system_fingerprint)
        if body.stream:
            return StreamingResponse(reply.stream(events), media_type="text/event-stream")
        return await reply.whole(events, request)

    return app


class Reply:
    """One request's answer, built from its tickets' events: whole, or streamed as server-sent events."""

    def __init__(self, adapter, body: SamplingBody, encoded: list[list[int]], tickets: list[Ticket], chat: bool,
                 system_fingerprint: str):
        self.adapter, self.body, self.encoded, self.tickets, self.chat = adapter, body, encoded, tickets, chat
        self.head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{secrets.token_hex(12)}", "created": int(time.time()),
                     "model": adapter.spec, "system_fingerprint": system_fingerprint}
        self.texts = [""] * len(tickets)
        self.offsets = [0] * len(tickets)
        self.tokens = [0] * len(tickets)  # each sequence's generated tokens so far, as its events say

    def cancel(self) -> None:
        for ticket in self.tickets:
            ticket.cancel()

    async def cancel_on_disconnect(self, request: Request) -> None:
        """Polls the connection while a whole answer is being generated: a client that hung up has its
        sequences cancelled (a streamed answer learns it from its closed stream)."""
        while not await request.is_disconnected():
            await asyncio.sleep(DISCONNECT_POLL_S)
        self.cancel()

    async def whole(self, events: asyncio.Queue, request: Request) -> dict:
        finishes: dict[int, str] = {}
        logprobs: list[list] = [[] for _ in self.tickets]
        watcher = asyncio.create_task(self.cancel_on_disconnect(request))
        try:
            while len(finishes) < len(self.tickets):
                index, event = await events.get()
                self.raise_error(event)
                if event.finish == "cancelled":
                    return {}  # the client has gone: nobody reads this
                self.texts[index] += event.text
                self.tokens[index] = event.tokens
                logprobs[index] += event.logprobs
                if event.finish:
                    finishes[index] = FINISH[event.finish]
        finally:
            watcher.cancel()
            self.cancel()  # a no-op for ended sequences; stops the others if this task is cancelled
        choices = []
        for index, ticket in enumerate(self.tickets):
            entry: dict[str, Any] = {"index": index, "finish_reason": finishes[index]}
            if self.chat:
                entry["message"] = {"role": "assistant", "content": self.texts[index]}
                entry["logprobs"] = self.chat_logprobs(logprobs[index]) if ticket.top_logprobs is not None else None
            else:
                entry["text"] = self.texts[index]
                entry["logprobs"] = self.completion_logprobs(index, logprobs[index]) \
                    if ticket.top_logprobs is not None else None
            choices.append(entry)
        return {**self.head, "object": "chat.completion" if self.chat else "text_completion", "choices": choices,
                "usage": self.usage()}

    async def stream(self, events: asyncio.Queue):
        """Server-sent events, OpenAI's way: one chunk per piece of a choice (chat's first names the role), a
        last one per choice with its finish reason, the usage chunk if asked for, then [DONE]."""
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        include_usage = self.body.include_usage
        ended = 0
        try:
            if self.chat:
                for index in range(len(self.tickets)):
                    yield self.chunk(kind, index, {"delta": {"role": "assistant", "content": ""}}, include_usage)
            while ended < len(self.tickets):
                index, event = await events.get()
                if event.error:
                    yield f"data: {json.dumps({'error': {'message': event.error, 'type': 'server_error'}})}\n\n"
                    self.cancel()
                    return
                if event.finish == "cancelled":
                    return
                self.texts[index] += event.text
                self.tokens[index] = event.tokens
                choice: dict[str, Any] = {"finish_reason": FINISH[event.finish] if event.finish else None}
                logprobs = None
                if self.tickets[index].top_logprobs is not None and event.logprobs:
                    logprobs = self.chat_logprobs(event.logprobs) if self.chat \
                        else self.completion_logprobs(index, event.logprobs)
                if self.chat:
                    choice["delta"] = {"content": event.text} if event.text else {}
                else:
                    choice["text"] = event.text
                choice["logprobs"] = logprobs
                yield self.chunk(kind, index, choice, include_usage)
                ended += bool(event.finish)
            if include_usage:
                yield f"data: {json.dumps({**self.head, 'object': kind, 'choices': [], 'usage': self.usage()})}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            self.cancel()  # the client left (the stream is closed early): its sequences stop; ended ones ignore it

    def chunk(self, kind: str, index: int, choice: dict, include_usage: bool) -> str:
        payload = {**self.head, "object": kind, "choices": [{"index": index, **choice}]}
        if self.body.continuous_usage:
            payload["usage"] = self.usage()
        elif include_usage:
            payload["usage"] = None
        return f"data: {json.dumps(payload)}\n\n"

    def raise_error(self, event: Event) -> None:
        if event.error:
            self.cancel()
            raise HTTPException(500, f"generation failed: {event.error}")

    def usage(self) -> dict:
        """Prompt tokens once per prompt (n samples of a prompt read it once), generated tokens of every sequence,
        its closing EOS included (the model computed it)."""
        prompt = sum(len(tokens) for tokens in self.encoded)
        completion = sum(self.tokens)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def token_text(self, token: int) -> str:
        return self.adapter.tokenizer.decode([token])

    def completion_logprobs(self, index: int, entries: list) -> dict:
        tokens = [self.token_text(token) for token, _, _ in entries]
        offsets = []
        for text in tokens:
            offsets.append(self.offsets[index])
            self.offsets[index] += len(text)
        return {"tokens": tokens, "token_logprobs": [logprob for _, logprob, _ in entries],
                "top_logprobs": [{self.token_text(t): lp for t, lp in top} for _, _, top in entries],
                "text_offset": offsets}

    def chat_logprobs(self, entries: list) -> dict:
        def item(token: int, logprob: float) -> dict:
            text = self.token_text(token)
            return {"token": text, "logprob": logprob, "bytes": list(text.encode())}
        return {"content": [{**item(token, logprob), "top_logprobs": [item(t, lp) for t, lp in top]}
                            for token, logprob, top in entries]}


def error_response(status: int, message: str, headers: dict | None = None) -> Response:
    return Response(error_body(status, message), status, headers=headers, media_type="application/json")


def prompt_logprobs(adapter, prompt: str, alternatives: int) -> dict[str, Any]:
    """OpenAI's logprobs object for the prompt's own tokens: tokens, token_logprobs (None for the first, which
    nothing predicts), text_offset and top_logprobs (the `alternatives` most likely at each position, at least the
    argmax, for greedy checks)."""
    encoded = adapter.tokenizer(prompt, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    if len(ids) > adapter.max_length + 1:
        raise HTTPException(400, f"the prompt has {len(ids)} tokens; this model scores at most "
                                 f"{adapter.max_length + 1}")
    with torch.inference_mode():
        logits, _ = adapter._forward(torch.tensor([ids[:-1]], device=adapter.device))
        logprobs = torch.log_softmax(logits[0].double(), dim=-1).cpu() if len(ids) > 1 else None
    tokens = [adapter.tokenizer.decode([token]) for token in ids]
    token_logprobs: list[float | None] = [None]
    top: list[dict[str, float] | None] = [None]
    for position in range(1, len(ids)):
        row = logprobs[position - 1]
        token_logprobs.append(float(row[ids[position]]))
        best = row.topk(max(1, alternatives))
        top.append({adapter.tokenizer.decode([t]): float(v) for t, v in zip(best.indices.tolist(), best.values)})
    return {"tokens": tokens, "token_ids": ids, "token_logprobs": token_logprobs,
            "text_offset": [start for start, _ in offsets], "top_logprobs": top}


def serve(adapter, host: str, port: int, settings: ServerSettings) -> None:
    import uvicorn  # deferred: only `harness serve` starts a server; tests call the app directly

    uvicorn.run(make_app(adapter, settings), host=host, port=port, log_level="warning")
