"""Generation with continuous batching, for the reference models.

Up to `batch_size` sequences decode together, one token each per step, over one KV cache. A sequence that ends
(EOS, a stop string, its max_tokens) leaves the batch at once, and waiting requests take the free places: their
prompts run together (prefill, left-padded among themselves), and their keys and values join the batch's cache,
left-padded to the same length (or the batch's padded to theirs). Columns that have become padding for every
sequence are dropped. Positions count real tokens only and padding keys are masked (attention.positions_and_mask),
so a sequence's logits do not depend on its neighbours, beyond float noise.

Stop strings are checked incrementally: each step searches only the end of the text that could hold a stop string
completed by the new token (the longest stop string plus a margin for characters a new byte completes), not the
whole text. As in the plain path, a context is cut from the left to leave room for its own max_tokens, and a
sampled request draws from its own random stream, so its text depends neither on the batch size nor on which
requests it shares a batch with.

Two drivers run the batch: `run` (an evaluation's whole list of requests, longest prompts first) and the server's
engine (harness/serving/engine.py), which calls `join`, `step` and `leave` itself as requests arrive, `cancel`s
those whose client left, and reads each sequence's text and log-probabilities as they grow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.engine.requests import GenerateRequest
from harness.models.attention import KVCache, ReferenceModel
from harness.models.decoding import left_padded, sample_token
from harness.systems.profiler import UNTIMED

STOP_MARGIN = 8  # characters before the new text searched again: a new token can complete a character there


@dataclass
class Sequence:
    index: int  # the request's position in the caller's list
    request: GenerateRequest
    generator: torch.Generator
    timeline: Any = UNTIMED  # the profiler's timeline of the group it joined with, and its row there
    timeline_row: int = 0
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish: str | None = None  # "eos", "stop", "length", or "cancelled" (its client left)
    # For a server's client that asks for log-probabilities: how many alternatives to keep at each position, and
    # for each chosen token (EOS included) its log-probability and the `top_logprobs` most likely (id, logprob).
    top_logprobs: int | None = None
    ignore_eos: bool = False  # a load test's fixed output length (vLLM's extension): EOS is a token like any other
    logprobs: list[tuple[int, float, list[tuple[int, float]]]] = field(default_factory=list)


class ContinuousBatcher:
    def __init__(self, adapter, batch_size: int, progress: Callable[[int], None] | None):
        self.adapter, self.device = adapter, adapter.device
        self.model: ReferenceModel = adapter.model
        self.tokenizer, self.eos = adapter.tokenizer, adapter.tokenizer.eos_token_id
        self.batch_size, self.progress = batch_size, progress
        self.active: list[Sequence] = []
        # The batch's KV cache and its (batch, length) real-token mask.
        self.cache: KVCache | None = None
        self.mask: torch.Tensor | None = None
        self.live_timelines: list[Any] = []

    def run(self, requests: list[GenerateRequest], encoded: list[list[int]], generators: list[torch.Generator]
            ) -> list[tuple[str, list[int], str]]:
        # Longest prompts first, as the plain path orders them: similar lengths join together, less padding.
        waiting = sorted(range(len(requests)), key=lambda i: -len(encoded[i]))
        results: list[tuple[str, list[int], str] | None] = [None] * len(requests)
        with torch.inference_mode():
            while waiting or self.active:
                free = self.batch_size - len(self.active)
                if free and waiting:
                    joining, waiting = waiting[:free], waiting[free:]
                    self.join([Sequence(i, requests[i], generators[i]) for i in joining],
                              [encoded[i] for i in joining])
                else:
                    self.step()
                for sequence in [s for s in self.active if s.finish]:
                    results[sequence.index] = (sequence.text, sequence.tokens, sequence.finish)
                self.leave()
        return results  # type: ignore[return-value]

    # ---- the batch ---------------------------------------------------------------------------------------

    def join(self, joined: list[Sequence], encoded: list[list[int]]) -> None:
        """Prefills the joining sequences' prompts together and adds them, each with its first token, to the
        batch."""
        contexts = [tokens[-max(1, self.adapter.max_length - sequence.request.max_tokens):]
                    for sequence, tokens in zip(joined, encoded)]
        ids, mask = left_padded(contexts, self.device)
        timeline = self.adapter.profiler.generation([len(c) for c in contexts]) if self.adapter.profiler else UNTIMED
        timeline.__enter__()
        if timeline is not UNTIMED:
            self.live_timelines.append(timeline)
        cache = self.model.new_cache()
        logits = self._last_logits(self.model(ids, attention_mask=mask, cache=cache, head=False))
        for row, sequence in enumerate(joined):
            sequence.timeline, sequence.timeline_row = timeline, row
        self._merge(cache, mask)
        self.active += joined
        self._choose(joined, logits)
        timeline.step_done()  # the group's first step: its prefill

    def step(self) -> None:
        """One token for every sequence in the batch."""
        step = torch.tensor([[s.tokens[-1]] for s in self.active], dtype=torch.long, device=self.device)
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        self.cache.reserve(1)
        logits = self._last_logits(self.model(step, attention_mask=self.mask, cache=self.cache, head=False))
        self._choose(self.active, logits)
        for timeline in self.live_timelines:
            timeline.step_done()

    def _last_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The logits of each row's last position, from the final hidden states: the head runs on those rows only
        (a prompt's other positions predict nothing). A plain linear head (on a GPU, or with packed linear layers
        off) runs as `weight @ hidden.T`, which MKL runs twice as fast as F.linear for a few rows on this CPU."""
        head, last = self.model.lm_head, hidden[:, -1]
        if type(head) is torch.nn.Linear and head.bias is None and not (head._forward_hooks or head._forward_pre_hooks):
            return (head.weight @ last.T).T.float().cpu()
        return head(last).float().cpu()

    def _choose(self, sequences: list[Sequence], logits: torch.Tensor) -> None:
        """The next token of each sequence (logits row i is sequences[i]'s): EOS, a stop string or max_tokens end
        it."""
        greedy = logits.argmax(-1)
        for row, sequence in enumerate(sequences):
            request = sequence.request
            token = int(greedy[row])
            if request.temperature > 0:
                token = int(sample_token(logits[row], request.temperature, request.top_p, sequence.generator))
            if sequence.top_logprobs is not None:
                self._record_logprobs(sequence, logits[row], token)
            if token == self.eos and not sequence.ignore_eos:
                self._end(sequence, "eos")
                continue
            sequence.tokens.append(token)
            sequence.timeline.token(sequence.timeline_row)
            searched_before = max(0, len(sequence.text) - STOP_MARGIN - max(map(len, request.stop), default=0))
            sequence.text = self.tokenizer.decode(sequence.tokens, skip_special_tokens=True)
            found = [sequence.text.find(s, searched_before) for s in request.stop if s]
            found = [position for position in found if position >= 0]
            if found:
                sequence.text = sequence.text[:min(found)]
                self._end(sequence, "stop")
            elif len(sequence.tokens) >= request.max_tokens:
                self._end(sequence, "length")

    @staticmethod
    def _record_logprobs(sequence: Sequence, logits: torch.Tensor, token: int) -> None:
        """The chosen token's log-probability under the model's distribution (before temperature and top_p, as
        OpenAI and vLLM report it) and the most likely alternatives, in float64 as the scoring paths sum them."""
        logprobs = torch.log_softmax(logits.double(), dim=-1)
        top = logprobs.topk(sequence.top_logprobs) if sequence.top_logprobs else None
        alternatives = list(zip(top.indices.tolist(), top.values.tolist())) if top is not None else []
        sequence.logprobs.append((token, float(logprobs[token]), alternatives))

    def cancel(self, sequence: Sequence) -> None:
        """Ends a sequence whose client has gone: the next `leave` drops it."""
        if not sequence.finish:
            self._end(sequence, "cancelled")

    def _end(self, sequence: Sequence, reason: str) -> None:
        sequence.finish = reason
        sequence.timeline.finish(sequence.timeline_row)

    def leave(self) -> None:
        """Drops ended sequences from the batch and its cache, and columns that are padding for every one left."""
        keep = [row for row, s in enumerate(self.active) if not s.finish]
        if len(keep) == len(self.active):
            return
        if self.progress:
            self.progress(len(self.active) - len(keep))
        self.active = [self.active[row] for row in keep]
        for timeline in [t for t in self.live_timelines if not any(s.timeline is t for s in self.active)]:
            self.live_timelines.remove(timeline)
            timeline.__exit__(None, None, None)  # every row of the group has ended: the profiler records it
        if not keep:
            self.cache, self.mask = None, None
            return
        rows = torch.tensor(keep, device=self.device)
        first = int(self.mask[rows].sum(0).nonzero()[0])  # the first column some remaining sequence uses
        self.mask = self.mask[rows, first:]
        for layer in range(len(self.cache.keys)):
            self.cache.keys[layer] = self.cache.keys[layer][rows, :, first:]
            self.cache.values[layer] = self.cache.values[layer][rows, :, first:]

    def _merge(self, cache: KVCache, mask: torch.Tensor) -> None:
        """Adds a joining group's cache and mask to the batch's, left-padding the shorter to the longer."""
        if self.cache is None:
            self.cache, self.mask = cache, mask
            return
        length = max(self.mask.shape[1], mask.shape[1])
        pad = lambda tensor, dim: _left_pad(tensor, length - tensor.shape[dim], dim)
        self.mask = torch.cat([pad(self.mask, 1), pad(mask, 1)])
        for layer in range(len(cache.keys)):
            self.cache.keys[layer] = torch.cat([pad(self.cache.keys[layer], 2), pad(cache.keys[layer], 2)])
            self.cache.values[layer] = torch.cat([pad(self.cache.values[layer], 2), pad(cache.values[layer], 2)])


def _left_pad(tensor: torch.Tensor, amount: int, dim: int) -> torch.Tensor:
    if amount == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = amount
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
