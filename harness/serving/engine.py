"""The serving engine: one thread owns the model and runs continuous batching over every open request.

HTTP handlers `submit` tickets (one per sequence to generate) and await their events; the engine thread takes
waiting tickets into the batch whenever it has room (their prompts prefilled together, harness/models/
generation.py), otherwise decodes one token for every sequence in the batch, and after each step sends every
ticket the text it gained. Work that must see the model alone (scoring a prompt for `echo`) is queued as a call and
run between steps. A ticket whose client has gone is cancelled: dropped from the queue, or from the batch at the
next step.

Text is streamed only once it is final: the last characters that could still become the start of a stop string
are held back until the next token decides, and so is a character that a later token's bytes complete, so the
streamed pieces always add up to the text a non-streamed request gets.

An adapter without a reference model (`transformers:`) has no batch to join: its tickets are generated one at a
time, each in one piece when it ends.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.engine.model import stream_seed
from harness.engine.requests import GenerateRequest
from harness.models.generation import Sequence
from harness.models.reference import ReferenceAdapter
from harness.serving.metrics import ServerMetrics

REPLACEMENT = "\ufffd"  # what a decoder gives for bytes of a character that a later token completes


class QueueFull(Exception):
    """More tickets are waiting than the server accepts: the client should come back later (HTTP 429)."""


@dataclass
class Event:
    """What a ticket gained in one step: new text, the new tokens' log-probabilities, and once it ends, why."""
    text: str
    logprobs: list[tuple[int, float, list[tuple[int, float]]]]
    finish: str | None = None
    error: str | None = None
    tokens: int = 0  # the sequence's generated tokens so far (its closing EOS included), for usage


@dataclass
class Ticket:
    """One sequence to generate: its prompt's tokens, its request, what seeds its random stream (the request's
    seed and how many identical sequences the request asked for before this one, as an evaluation's adapter seeds
    it: harness/engine/model.py), and where its events go (`deliver` is called on the engine thread; the HTTP side
    makes it thread-safe)."""
    prompt_tokens: list[int]
    request: GenerateRequest
    seed: int
    occurrence: int
    deliver: Callable[[Event], None]
    top_logprobs: int | None = None
    ignore_eos: bool = False
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: bool = False
    sequence: Sequence | None = None
    sent_text: int = 0  # characters of the sequence's text already delivered
    sent_logprobs: int = 0
    first_token_at: float | None = None

    def cancel(self) -> None:
        self.cancelled = True  # read by the engine thread before its next step


class Engine:
    def __init__(self, adapter, max_batch: int, max_queued: int, metrics: ServerMetrics):
        self.adapter, self.max_batch, self.max_queued, self.metrics = adapter, max_batch, max_queued, metrics
        self.batched = isinstance(adapter, ReferenceAdapter)
        self.batcher = adapter.new_batcher(max_batch, progress=None) if self.batched else None
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.waiting: list[Ticket] = []
        self.running: list[Ticket] = []
        self.queued = 0  # tickets submitted and not yet in the batch (the inbox and `waiting`)
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="harness-serve-engine", daemon=True)
        self.thread.start()

    # ---- the HTTP side -----------------------------------------------------------------------------------

    def submit(self, tickets: list[Ticket]) -> None:
        """Queues every ticket, or none: raises QueueFull when they would take the queue past its maximum."""
        with self.lock:
            if self.queued + len(tickets) > self.max_queued:
                raise QueueFull
            self.queued += len(tickets)
            self.metrics.queue_depth.set(self.queued)
        for ticket in tickets:
            self.inbox.put(ticket)

    def call(self, function: Callable[[], Any]) -> Future:
        """Runs `function` on the engine thread between two steps, with the model to itself."""
        future: Future = Future()
        self.inbox.put((function, future))
        return future

    def stop(self) -> None:
        self.stopped.set()
        self.inbox.put(None)
        self.thread.join(timeout=60)

    # ---- the engine thread -------------------------------------------------------------------------------

    def _loop(self) -> None:
        with torch.inference_mode():
            while not self.stopped.is_set():
                self._take(block=not (self.waiting or self.running))
                try:
                    self._work()
                except Exception as error:  # noqa: BLE001 - a failed step fails its requests, not the server
                    self._fail_all(f"{type(error).__name__}: {error}")

    def _take(self, block: bool) -> None:
        """Moves what arrived into `waiting` (blocking for the first item when there is nothing else to do) and
        runs queued calls at once."""
        while True:
            try:
                item = self.inbox.get(block=block, timeout=1.0 if block else None)
            except queue.Empty:
                return
            block = False
            if item is None:
                return
            if isinstance(item, tuple):
                function, future = item
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(function())
                    except Exception as error:  # noqa: BLE001 - handed to the caller, who answers with it
                        future.set_exception(error)
            else:
                self.waiting.append(item)

    def _work(self) -> None:
        for ticket in [t for t in self.waiting if t.cancelled]:
            self.waiting.remove(ticket)
            self._dequeued(1)
            ticket.deliver(Event("", [], "cancelled"))
        if self.batcher is None:
            self._one_at_a_time()
            return
        for ticket in self.running:
            if ticket.cancelled:
                self.batcher.cancel(ticket.sequence)
        free = self.max_batch - len(self.batcher.active)
        if free and self.waiting:
            joining, self.waiting = self.waiting[:free], self.waiting[free:]
            self._dequeued(len(joining))
            for ticket in joining:
                generator = torch.Generator(device="cpu").manual_seed(
                    stream_seed(ticket.seed, ticket.request.key, ticket.occurrence))
                ticket.sequence = Sequence(0, ticket.request, generator, top_logprobs=ticket.top_logprobs,
                                           ignore_eos=ticket.ignore_eos)
            self.running += joining  # before the prefill: if it raises, _fail_all answers them too
            self.batcher.join([t.sequence for t in joining], [t.prompt_tokens for t in joining])
        elif self.batcher.active:
            self.batcher.step()
        else:
            return
        self.metrics.batch_size.set(len(self.batcher.active))
        self.metrics.step_batch_size.observe(len(self.batcher.active))
        for ticket in self.running:
            self._deliver(ticket)
        self.batcher.leave()
        self.running = [t for t in self.running if not t.sequence.finish]
        self.metrics.batch_size.set(len(self.running))

    def _deliver(self, ticket: Ticket) -> None:
        sequence = ticket.sequence
        now = time.perf_counter()
        if ticket.first_token_at is None and (sequence.tokens or sequence.finish):
            ticket.first_token_at = now
            self.metrics.time_to_first_token.observe(now - ticket.submitted)
        final = sequence.text if sequence.finish else self._settled(sequence)
        new_text = final[ticket.sent_text:] if len(final) > ticket.sent_text else ""
        new_logprobs = sequence.logprobs[ticket.sent_logprobs:]
        if not (new_text or new_logprobs or sequence.finish):
            return
        ticket.sent_text += len(new_text)
        ticket.sent_logprobs = len(sequence.logprobs)
        if sequence.finish:
            self.metrics.finished(ticket, now)
        tokens = len(sequence.tokens) + (sequence.finish == "eos")
        ticket.deliver(Event(new_text, new_logprobs, sequence.finish, tokens=tokens))

    @staticmethod
    def _settled(sequence: Sequence) -> str:
        """The part of an unfinished sequence's text that no later token can change: without the characters that
        could begin a stop string, and without a trailing character still waiting for its bytes."""
        text = sequence.text
        hold = max((len(stop) - 1 for stop in sequence.request.stop), default=0)
        text = text[:len(text) - hold] if hold else text
        return text.rstrip(REPLACEMENT)

    def _one_at_a_time(self) -> None:
        """An adapter without a reference model: the next waiting ticket, generated whole."""
        if not self.waiting:
            return
        ticket = self.waiting.pop(0)
        self._dequeued(1)
        self.metrics.batch_size.set(1)
        try:
            [generation] = self.adapter.generate([ticket.request], batch_size=1, seed=ticket.seed,
                                                 occurrences=[ticket.occurrence])
        except Exception as error:  # noqa: BLE001 - the request fails, the server goes on
            ticket.deliver(Event("", [], "error", error=f"{type(error).__name__}: {error}"))
            self.metrics.batch_size.set(0)
            return
        ticket.sequence = Sequence(0, ticket.request, None, tokens=generation.tokens, text=generation.text,
                                   finish=generation.finish)
        self._deliver(ticket)
        self.metrics.batch_size.set(0)

    def _dequeued(self, count: int) -> None:
        with self.lock:
            self.queued -= count
            self.metrics.queue_depth.set(self.queued)

    def _fail_all(self, message: str) -> None:
        """A step that raised leaves the batch in an unknown state: every request in it fails, and the batch
        starts empty."""
        for ticket in self.running:
            ticket.deliver(Event("", [], "error", error=message))
        self.running = []
        if self.batched:
            self.batcher = self.adapter.new_batcher(self.max_batch, progress=None)
        self.metrics.batch_size.set(0)
