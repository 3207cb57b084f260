"""`harness serve`: any of our model specs behind an OpenAI-compatible HTTP server (FastAPI on uvicorn).

    POST /v1/completions        prompt (a string or a list of them), max_tokens, temperature, top_p, stop, seed,
                                n (samples of each prompt, in OpenAI's order: prompt by prompt); with echo and
                                logprobs, each prompt token's log-probability (the first has none), its text
                                offset, and the most likely token at each position: what a client needs to score
                                a continuation (vLLM answers the same way)
    POST /v1/chat/completions   messages, written through the model's chat template, then generated from (n too)
    GET  /v1/models             the one model served, under its spec

A request's generations are one call of the adapter with the request's seed: identical prompts in it (a list, or
n > 1) are identical requests, which the adapter gives distinct random streams, so that its samples differ.

One model answers one request at a time (a lock): the server is for evaluating a model remotely and for testing
the `openai:` adapter end to end, not for serving traffic.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import torch
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from harness.engine.requests import GenerateRequest


class CompletionBody(BaseModel):
    model: str | None = None
    prompt: str | list[str]
    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    stop: str | list[str] | None = None
    echo: bool = False
    logprobs: int | None = None
    seed: int = 0
    n: int = Field(1, ge=1, le=128)  # OpenAI's own bound


class ChatBody(BaseModel):
    model: str | None = None
    messages: list[dict[str, str]]
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: str | list[str] | None = None
    seed: int = 0
    n: int = Field(1, ge=1, le=128)  # OpenAI's own bound


FINISH = {"eos": "stop", "stop": "stop", "length": "length"}


def make_app(adapter) -> FastAPI:
    app = FastAPI(title=f"harness serve: {adapter.spec}")
    lock = threading.Lock()
    # OpenAI's field for "the backend configuration the model runs with": here, what decides our answers (weights,
    # tokenizer and config files, scoring code), so that a client's cache can tell a redeployed model.
    system_fingerprint = f"fp_{adapter.fingerprint[:16]}"

    def generate(prompts: list[str], body) -> list[tuple[str, str]]:
        """(text, finish reason) of body.n samples of each prompt, prompt by prompt."""
        stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
        requests = [GenerateRequest(prompt, stop=stop, max_tokens=body.max_tokens, temperature=body.temperature,
                                    top_p=body.top_p) for prompt in prompts for _ in range(body.n)]
        # One call, so that the adapter counts identical requests' occurrences; one at a time, as before.
        with lock:
            generations = adapter.generate(requests, batch_size=1, seed=body.seed)
        return [(generation.text, FINISH[generation.finish]) for generation in generations]

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": adapter.spec, "object": "model", "owned_by": "harness"}]}

    @app.post("/v1/completions")
    def completions(body: CompletionBody) -> dict:
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if body.echo:
            if body.max_tokens != 0:
                raise HTTPException(400, "echo is supported with max_tokens 0 only (scoring a prompt)")
            if body.logprobs is None:
                raise HTTPException(400, "echo with max_tokens 0 needs logprobs")
            if body.n != 1:
                raise HTTPException(400, "echo with max_tokens 0 scores a prompt once: n must be 1")
            choices = []
            for index, prompt in enumerate(prompts):
                with lock:
                    logprobs = prompt_logprobs(adapter, prompt)
                choices.append({"index": index, "text": prompt, "logprobs": logprobs, "finish_reason": "length"})
        else:
            choices = [{"index": index, "text": text, "logprobs": None, "finish_reason": finish}
                       for index, (text, finish) in enumerate(generate(prompts, body))]
        return {"id": f"cmpl-{time.time_ns()}", "object": "text_completion", "created": int(time.time()),
                "model": adapter.spec, "system_fingerprint": system_fingerprint, "choices": choices}

    @app.post("/v1/chat/completions")
    def chat(body: ChatBody) -> dict:
        prompt = adapter.apply_chat_template(body.messages)
        choices = [{"index": index, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                   for index, (text, finish) in enumerate(generate([prompt], body))]
        return {"id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion", "created": int(time.time()),
                "model": adapter.spec, "system_fingerprint": system_fingerprint, "choices": choices}

    return app


def prompt_logprobs(adapter, prompt: str) -> dict[str, Any]:
    """OpenAI's logprobs object for the prompt's own tokens: tokens, token_logprobs (None for the first, which
    nothing predicts), text_offset and top_logprobs (the argmax at each position, for greedy checks)."""
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
        best = int(row.argmax())
        token_logprobs.append(float(row[ids[position]]))
        top.append({adapter.tokenizer.decode([best]): float(row[best])})
    return {"tokens": tokens, "token_ids": ids, "token_logprobs": token_logprobs,
            "text_offset": [start for start, _ in offsets], "top_logprobs": top}


def serve(adapter, host: str, port: int) -> None:
    import uvicorn  # deferred: only `harness serve` starts a server; tests call the app directly

    uvicorn.run(make_app(adapter), host=host, port=port, log_level="warning")
