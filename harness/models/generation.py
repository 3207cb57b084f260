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

Three ways to decode, chosen when the batcher is made: with the KV cache (each step reads one new token per
sequence); without it (`kv_cache=False`: each step reads every sequence's whole history again, the baseline the
cache is measured against; greedy text is the same); and speculatively (a `speculator` proposes up to
`draft_tokens` tokens per sequence, the target reads them all in one step and keeps what the rule of
harness/models/speculation.py keeps; greedy text is the same, sampled text has the same distribution). The cache
and its mask live in a BatchCache (harness/models/batch_cache.py), which also keeps rejected drafts out of sight.

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
from harness.models.attention import ReferenceModel
from harness.models.batch_cache import BatchCache
from harness.models.decoding import head_logits, left_padded, sample_token, sampling_probs
from harness.models.speculation import accept_greedy, accept_sampled
from harness.models.speculators import Speculator
from harness.systems.profiler import UNTIMED

STOP_MARGIN = 8  # characters before the new text searched again: a new token can complete a character there


@dataclass
class Sequence:
    index: int  # the request's position in the caller's list
    request: GenerateRequest
    generator: torch.Generator
    timeline: Any = UNTIMED  # the profiler's timeline of the group it joined with, and its row there
    timeline_row: int = 0
    context: list[int] = field(default_factory=list)  # the prompt's tokens as the model reads them
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish: str | None = None  # "eos", "stop", "length", or "cancelled" (its client left)
    # For a server's client that asks for log-probabilities: how many alternatives to keep at each position, and
    # for each chosen token (EOS included) its log-probability and the `top_logprobs` most likely (id, logprob).
    top_logprobs: int | None = None
    ignore_eos: bool = False  # a load test's fixed output length (vLLM's extension): EOS is a token like any other
    logprobs: list[tuple[int, float, list[tuple[int, float]]]] = field(default_factory=list)


class ContinuousBatcher:
    def __init__(self, adapter, batch_size: int, progress: Callable[[int], None] | None, kv_cache: bool = True,
                 speculator: Speculator | None = None, draft_tokens: int = 0):
        self.adapter, self.device = adapter, adapter.device
        self.model: ReferenceModel = adapter.model
        self.tokenizer, self.eos = adapter.tokenizer, adapter.tokenizer.eos_token_id
        self.batch_size, self.progress = batch_size, progress
        if speculator is not None and not kv_cache:
            raise ValueError("speculative decoding verifies drafts against the KV cache; it cannot run without it")
        self.kv_cache, self.speculator, self.draft_tokens = kv_cache, speculator, draft_tokens
        self.active: list[Sequence] = []
        self.batch: BatchCache | None = None  # the active sequences' KV cache (None without the cache)
        self.live_timelines: list[Any] = []

    def run(self, requests: list[GenerateRequest], encoded: list[list[int]], generators: list[torch.Generator],
            ignore_eos: bool = False) -> list[tuple[str, list[int], str]]:
        # Longest prompts first, as the plain path orders them: similar lengths join together, less padding.
        waiting = sorted(range(len(requests)), key=lambda i: -len(encoded[i]))
        results: list[tuple[str, list[int], str] | None] = [None] * len(requests)
        with torch.inference_mode():
            while waiting or self.active:
                free = self.batch_size - len(self.active)
                if free and waiting:
                    joining, waiting = waiting[:free], waiting[free:]
                    self.join([Sequence(i, requests[i], generators[i], ignore_eos=ignore_eos) for i in joining],
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
        joining = BatchCache(self.model.new_cache(), mask) if self.kv_cache else None
        hidden = self.model(ids, attention_mask=mask, cache=joining.cache if joining else None, head=False)
        if joining is not None and self.batch is not None:
            self.batch.merge(joining)
        elif joining is not None:
            self.batch = joining
        if self.speculator is not None:
            self.speculator.join(contexts)
        for row, (sequence, context) in enumerate(zip(joined, contexts)):
            sequence.timeline, sequence.timeline_row, sequence.context = timeline, row, context
        self.active += joined
        self._choose(joined, head_logits(self.model, hidden[:, -1]))
        timeline.step_done()  # the group's first step: its prefill

    def step(self) -> None:
        """One target step for every sequence in the batch: one token each, or with a speculator one to
        draft_tokens + 1."""
        if self.speculator is not None:
            self._speculative_step()
        elif self.kv_cache:
            step = torch.tensor([[s.tokens[-1]] for s in self.active], dtype=torch.long, device=self.device)
            self.batch.extend(1)
            hidden = self.model(step, attention_mask=self.batch.mask, cache=self.batch.cache, head=False)
            self._choose(self.active, head_logits(self.model, hidden[:, -1]))
        else:  # no cache: every history is read again, as a prefill
            ids, mask = left_padded([s.context + s.tokens for s in self.active], self.device)
            hidden = self.model(ids, attention_mask=mask, head=False)
            self._choose(self.active, head_logits(self.model, hidden[:, -1]))
        for timeline in self.live_timelines:
            timeline.step_done()

    def _speculative_step(self) -> None:
        """Drafts, then one target pass over each sequence's last token and its drafts (harness/models/
        speculation.py decides what is kept); the target's cache forgets the rejected drafts."""
        profiler = self.adapter.profiler
        started = profiler.now() if profiler else 0
        remaining = [s.request.max_tokens - len(s.tokens) for s in self.active]  # the last step yields one
        drafted = min(self.draft_tokens, max(remaining) - 1)
        drafts: list[list[int]] = [[] for _ in self.active]
        distributions: list[torch.Tensor | None] = [None] * len(self.active)
        if drafted > 0:
            drafts, distributions = self.speculator.propose(
                [s.context + s.tokens for s in self.active], [s.request for s in self.active],
                [s.generator for s in self.active], drafted)
            drafts = [d[:max(0, r - 1)] for d, r in zip(drafts, remaining)]
        proposed_at = profiler.now() if profiler else 0
        width = max(map(len, drafts))
        step = torch.tensor([[s.tokens[-1], *d, *[0] * (width - len(d))] for s, d in zip(self.active, drafts)],
                            dtype=torch.long, device=self.device)
        self.batch.extend(width + 1)
        hidden = self.model(step, attention_mask=self.batch.mask, cache=self.batch.cache, head=False)
        logits = head_logits(self.model, hidden.reshape(-1, hidden.shape[-1])).view(len(self.active), width + 1, -1)
        kept = []
        for row, (sequence, draft) in enumerate(zip(self.active, drafts)):
            request, positions = sequence.request, logits[row, :len(draft) + 1]
            if request.temperature > 0:
                q = distributions[row][:len(draft)] if distributions[row] is not None else None
                tokens = accept_sampled(draft, q, sampling_probs(positions, request.temperature, request.top_p),
                                        sequence.generator)
            else:
                tokens = accept_greedy(draft, positions)
            kept.append(len(tokens) - 1)
            for position, token in enumerate(tokens):
                if not self._take(sequence, token, positions[position]):
                    break
        self.batch.forget_last([width - count for count in kept])
        if drafted > 0:
            self.speculator.kept(drafted, kept)
        if profiler:
            profiler.speculation_step(rows=len(kept), proposed=sum(map(len, drafts)), accepted=sum(kept),
                                      draft_ns=proposed_at - started, target_ns=profiler.now() - proposed_at)

    def _choose(self, sequences: list[Sequence], logits: torch.Tensor) -> None:
        """The next token of each sequence (logits row i is sequences[i]'s)."""
        greedy = logits.argmax(-1)
        for row, sequence in enumerate(sequences):
            request = sequence.request
            token = int(greedy[row])
            if request.temperature > 0:
                token = int(sample_token(logits[row], request.temperature, request.top_p, sequence.generator))
            self._take(sequence, token, logits[row])

    def _take(self, sequence: Sequence, token: int, logits: torch.Tensor) -> bool:
        """Adds a chosen token (its position's logits for log-probabilities) to a sequence; EOS, a stop string or
        max_tokens end it. Whether the sequence goes on."""
        request = sequence.request
        if sequence.top_logprobs is not None:
            self._record_logprobs(sequence, logits, token)
        if token == self.eos and not sequence.ignore_eos:
            self._end(sequence, "eos")
            return False
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
        return sequence.finish is None

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
        """Drops ended sequences from the batch and its cache (and the speculator's)."""
        keep = [row for row, s in enumerate(self.active) if not s.finish]
        if len(keep) == len(self.active):
            return
        if self.progress:
            self.progress(len(self.active) - len(keep))
        self.active = [self.active[row] for row in keep]
        for timeline in [t for t in self.live_timelines if not any(s.timeline is t for s in self.active)]:
            self.live_timelines.remove(timeline)
            timeline.__exit__(None, None, None)  # every row of the group has ended: the profiler records it
        if self.speculator is not None:
            self.speculator.keep(keep)
        if not keep:
            self.batch = None
        elif self.batch is not None:
            self.batch.keep(keep)
