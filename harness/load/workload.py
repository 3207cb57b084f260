"""What a load run sends: synthetic prompts of given token lengths, or the prompts of one of the harness's tasks.

Synthetic (as vLLM's benchmark_serving "random" dataset): each prompt is made of random tokens of the served model's
tokenizer, decoded and re-encoded until it has exactly the drawn length; lengths are drawn uniformly within
`spread` of the mean (spread 0: all equal). Output lengths are fixed with `ignore_eos` (vLLM's extension, which
`harness serve` implements), so every request generates exactly its max_tokens; a server without it may stop
earlier, and the records count what it generated.

Task prompts: the generation requests of a task (its context rendered as plain text, its stop strings and max
tokens), document by document.
"""

from __future__ import annotations

import numpy as np

from harness.engine.prompts import Prompt
from harness.engine.requests import GenerateRequest
from harness.load.runner import Workload

FIRST_ORDINARY_TOKEN = 100  # below this, tokenizers keep special and byte tokens that do not round-trip as text


def synthetic(tokenizer, count: int, input_tokens: int, output_tokens: int, spread: float, seed: int,
              ignore_eos: bool = True) -> Workload:
    rng = np.random.default_rng(seed)
    vocabulary = len(tokenizer)
    special = set(tokenizer.all_special_ids)
    bodies = []
    for _ in range(count):
        wanted_in = _drawn(rng, input_tokens, spread)
        wanted_out = _drawn(rng, output_tokens, spread)
        ids = [int(i) for i in rng.integers(FIRST_ORDINARY_TOKEN, vocabulary, size=wanted_in) if int(i) not in special]
        text = tokenizer.decode(ids)
        for _ in range(4):  # decoding and encoding again may merge or split tokens: settle the length
            ids = tokenizer.encode(text, add_special_tokens=False)
            if len(ids) < wanted_in:
                ids += [int(i) for i in rng.integers(FIRST_ORDINARY_TOKEN, vocabulary, size=wanted_in - len(ids))]
            text = tokenizer.decode(ids[:wanted_in])
        body = {"prompt": text, "max_tokens": wanted_out}
        if ignore_eos:
            body["ignore_eos"] = True
        bodies.append(body)
    return Workload(tuple(bodies), f"synthetic: {input_tokens} input tokens, {output_tokens} output tokens"
                                   + (f", ±{spread:.0%}" if spread else ""))


def _drawn(rng: np.random.Generator, mean: int, spread: float) -> int:
    if not spread:
        return mean
    return int(rng.integers(max(1, round(mean * (1 - spread))), round(mean * (1 + spread)) + 1))


def from_task(task, count: int) -> Workload:
    """The first `count` generation requests of a built task (tasks/), contexts written out as plain text."""
    bodies = []
    for doc in task.docs():
        for request in task.requests(doc):
            if not isinstance(request, GenerateRequest):
                continue
            context = request.context.text() if isinstance(request.context, Prompt) else request.context
            body = {"prompt": context, "max_tokens": request.max_tokens}
            if request.stop:
                body["stop"] = list(request.stop)
            bodies.append(body)
            if len(bodies) == count:
                return Workload(tuple(bodies), f"{task.name}: its first {count} generation prompts")
    if not bodies:
        raise ValueError(f"{task.name} asks for no generation: its prompts cannot load a completion server")
    return Workload(tuple(bodies), f"{task.name}: its {len(bodies)} generation prompts")
