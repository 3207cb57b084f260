"""The torch base of our model adapters: the three request methods (harness/engine/model.py), batched, over any
causal language model in torch.

The engine hands an adapter whole lists of requests with a batch size; the adapter owns the math. Token handling
follows lm-evaluation-harness 0.4.x so that scores are comparable with the field's:
  - loglikelihood: a context's trailing whitespace moves to the continuation; the pair is encoded as a whole and
    the continuation's tokens are what the whole has beyond the context's; an empty context is replaced by the
    prefix token (BOS, or EOS where a tokenizer has none); inputs longer than the model's window are cut from
    the left.
  - loglikelihood_rolling: the text is cut into disjoint windows of the model's maximum length, every token
    predicted exactly once; the first window is predicted from the prefix token, each later one from the tokens
    before it that still fit in the model's window.
Subclasses provide `_forward` (logits for a batch, optionally with a KV cache) and describe themselves.
"""

from __future__ import annotations

import hashlib
import json
from abc import abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from harness.engine.model import LanguageModel, Progress, occurrences_in, stream_seed
from harness.engine.requests import (
    GenerateRequest,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    RollingLoglikelihoodRequest,
)
from harness.errors import UserError
from harness.models.checkpoint import deciding_files_sha256, weights_sha256
from harness.models.decoding import cut_at_stop, left_padded, sample_token
from harness.models.lm_eval_tokens import move_trailing_whitespace, rolling_windows
from harness.systems.profiler import UNTIMED, Profiler

# A batch of right-padded sequences is limited to this many token positions (besides the batch size), so that an
# 8192-token window never shares a batch with seven others and exhausts memory; logits alone are
# positions x vocabulary x 4 bytes.
MAX_BATCH_POSITIONS = 16384
# `batch_size=None` is the "auto" policy: for loglikelihoods a token budget (harness/models/scoring.py); for
# generation, until it batches continuously, this many sequences at once.
AUTO_GENERATION_BATCH = 8


@dataclass
class Generation:
    text: str  # what the request gets: decoded, cut before the first stop string
    tokens: list[int]  # every token generated (EOS not included)
    finish: str  # "eos", "stop" (a stop string appeared) or "length" (max_tokens reached)


def answer_code_sha256() -> str:
    """A version of the code that turns requests into answers, derived rather than remembered: the sha256 of every
    source file of harness/models (architectures, attention, scoring, generation, tokenization, variants) and of
    the engine's request types. Any change to them leaves older cached answers unreachable."""
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for path in [*sorted(here.glob("*.py")), here.parent / "engine" / "requests.py"]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


ANSWER_CODE = answer_code_sha256()


class ModelAdapter(LanguageModel):
    """A language model in torch. `spec` is what the user typed; `folder` holds the weights and tokenizer.
    Subclasses set these attributes, `implementation` (a name for the run record) and `model` (a torch module), and
    take the run's profiler (or None) when they are made: it times every batch and generation step."""

    spec: str
    folder: Path
    implementation: str
    model: torch.nn.Module
    tokenizer: Any
    max_length: int
    device: torch.device
    dtype: torch.dtype
    weights_sha256: str | None = None  # computed on first use (harness/models/checkpoint.py trusts a fresh note)
    profiler: Profiler | None = None  # given to the constructor by harness run: times batches and steps

    @cached_property
    def fingerprint(self) -> str:
        """Identifies what decides the answers: the weights as they are on disk, the tokenizer and config files, and
        the code that computes answers (ANSWER_CODE); subclasses add their variants. dtype, device and the prompt
        format are the response cache's own key fields."""
        if self.weights_sha256 is None:
            self.weights_sha256 = weights_sha256(self.folder)
        identity = [self.weights_sha256, deciding_files_sha256(self.folder), ANSWER_CODE, self.max_length]
        return hashlib.sha256(json.dumps(identity).encode()).hexdigest()

    def shorten_window(self, max_length: int | None) -> None:
        """--max-length: a window shorter than the config's (lm-eval's max_length), e.g. to bound the memory of
        rolling perplexity. It enters the fingerprint, as it decides the windows."""
        if max_length is None:
            return
        if max_length > self.max_length:
            raise UserError(f"--max-length {max_length} is longer than the {self.max_length} positions this model "
                            f"was built for")
        self.__dict__.pop("fingerprint", None)  # a fingerprint computed before is of the longer window
        self.max_length = max_length

    def info(self) -> dict:
        parameters = list(self.model.parameters())
        # Bytes of every tensor the model holds once: quantized layers keep their packed weights in buffers, and
        # a tied head shares the embedding's storage.
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                    for t in [*parameters, *self.model.buffers()]}
        return {
            "implementation": self.implementation,
            "folder": str(self.folder),
            "parameters": sum(p.numel() for p in parameters),
            "bytes": sum(storages.values()),
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "max_length": self.max_length,
            "bos_token_id": self.tokenizer.bos_token_id,
            "prefix_token_id": self.prefix_token_id,
            "special_tokens": self.special_token_rule(),
        }

    def special_token_rule(self) -> str:
        """The BOS rule in force, in words, for the run record: it is where harnesses disagree on models whose
        tokenizer adds a BOS (Gemma, Llama), and it follows lm-eval 0.4.13 either way."""
        adds_bos = self.tokenizer.encode("a")[:1] == [self.tokenizer.bos_token_id] != [None]
        added = f"the tokenizer adds BOS {self.tokenizer.bos_token_id}" if adds_bos else "the tokenizer adds no BOS"
        return (f"{added}; contexts, whole texts and rolling texts are encoded with the tokenizer's defaults (none "
                f"added to a text that starts with the prefix token); an empty context is the prefix token "
                f"{self.prefix_token_id} and its continuation gets no special tokens; rolling windows start from "
                f"the prefix token (lm-eval 0.4.13: TemplateLM.loglikelihood, HFLM.tok_encode, "
                f"get_rolling_token_windows)")

    @abstractmethod
    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, cache: Any = None):
        """Returns (logits for every position, cache). A None cache means: start a new one."""

    # ---- tokens -------------------------------------------------------------------------------------------

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @cached_property
    def _prefix_text(self) -> str:
        return self.tokenizer.decode([self.prefix_token_id])

    def encode(self, text: str) -> list[int]:
        # The tokenizer's own defaults decide special tokens (SmolLM2's add none), as lm-eval's HF model does,
        # except that a text which already starts with the prefix token gets no second one.
        if self._prefix_text and text.startswith(self._prefix_text):
            return self.tokenizer.encode(text, add_special_tokens=False)
        return self.tokenizer.encode(text)

    @property
    def chat_template(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None) or None

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        """The conversation as the model's own chat template writes it, ending where the assistant's reply
        begins (lm-eval's add_generation_prompt=True)."""
        if self.chat_template is None:
            raise UserError(f"{self.spec} has no chat template in its tokenizer files; run without "
                            "--apply-chat-template")
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """As lm-eval 0.4.13 (lm_eval/api/model.py, TemplateLM.loglikelihood and _encode_pair): an empty context is
        the prefix token, and the continuation is encoded without special tokens (no second BOS), unless it starts
        with the prefix token itself; otherwise the whole text and the context are encoded with the tokenizer's
        defaults (a BOS where the tokenizer adds one) and the continuation is what the whole adds to the context.
        A continuation longer than the window cannot be scored (its first token would have no context): refused."""
        if not context:
            tokens = self.tokenizer.encode(continuation, add_special_tokens=False)
            pair = ([self.prefix_token_id], tokens) if tokens[:1] != [self.prefix_token_id] else (tokens[:1],
                                                                                                   tokens[1:])
        else:
            context, continuation = move_trailing_whitespace(context, continuation)
            whole = self.encode(context + continuation)
            context_tokens = self.encode(context)
            pair = (context_tokens, whole[len(context_tokens):])
        if len(pair[1]) > self.max_length:
            raise UserError(f"a continuation of {len(pair[1])} tokens is longer than {self.spec}'s window of "
                            f"{self.max_length} tokens and cannot be scored (it starts {continuation[:40]!r})")
        return pair

    # ---- the three requests ------------------------------------------------------------------------------

    def truncates(self, request) -> bool:
        """Whether the model sees only the end of the request's prompt: a loglikelihood input longer than the
        window, or a generation prompt with no room left for its max_tokens. Both are cut from the left, as
        lm-eval cuts them. Every token holds at least one byte, so a short prompt is answered without encoding it."""
        if isinstance(request, LoglikelihoodRequest):
            text, room = request.context + request.continuation, self.max_length + 1
        elif isinstance(request, GenerateRequest):
            text, room = request.context, max(1, self.max_length - request.max_tokens)
        else:
            return False  # rolling windows cover the whole text
        if len(text.encode("utf-8")) + 2 <= room:  # + 2: a prefix and an end token a tokenizer may add
            return False
        if isinstance(request, LoglikelihoodRequest):
            context, continuation = self._encode_pair(request.context, request.continuation)
            return len(context) + len(continuation) > room
        return len(self.encode(text)) > room

    def working_on(self, task: str):
        return self.profiler.task(task) if self.profiler else nullcontext()

    @contextmanager
    def timed_by(self, profiler: Profiler) -> Iterator[None]:
        """Inside, another profiler times the model's batches: `harness profile` gives each timed run its own."""
        given, self.profiler = self.profiler, profiler
        try:
            yield
        finally:
            self.profiler = given

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest], batch_size: int | None = None,
                      progress: Progress | None = None, seed: int = 0,
                      occurrences: Sequence[int] | None = None) -> list[LoglikelihoodResult]:
        pairs = [self._encode_pair(r.context, r.continuation) for r in requests]
        return self._score_token_pairs(pairs, batch_size, lambda done: progress and progress(len(done)),
                                       "loglikelihood")

    def loglikelihood_rolling(self, requests: Sequence[RollingLoglikelihoodRequest], batch_size: int | None = None,
                              progress: Progress | None = None, seed: int = 0,
                              occurrences: Sequence[int] | None = None) -> list[float]:
        pairs, owner = [], []
        for index, request in enumerate(requests):
            for window in rolling_windows(self.encode(request.text), self.prefix_token_id, self.max_length):
                pairs.append(window)
                owner.append(index)
        windows_of = Counter(owner)
        # Progress counts requests: each window is its share of its document.
        on_done = lambda done: progress and progress(sum(1 / windows_of[owner[i]] for i in done))
        totals = [0.0] * len(requests)
        for index, result in zip(owner, self._score_token_pairs(pairs, batch_size, on_done, "loglikelihood_rolling")):
            totals[index] += result.logprob
        return totals

    def generate_until(self, requests: Sequence[GenerateRequest], batch_size: int | None = None,
                       progress: Progress | None = None, seed: int = 0,
                       occurrences: Sequence[int] | None = None) -> list[str]:
        return [g.text for g in self.generate(requests, batch_size, progress, seed, occurrences)]

    def generate(self, requests: Sequence[GenerateRequest], batch_size: int | None = None,
                 progress: Progress | None = None, seed: int = 0,
                 occurrences: Sequence[int] | None = None) -> list[Generation]:
        """Greedy (temperature 0) or sampled decoding with a KV cache, each text ending at EOS, at the first stop
        string (cut off) or after its max_tokens. A sampled request draws from its own random stream, seeded by
        the run's seed, the request and how many identical requests came before it (in `requests`, or as
        `occurrences` says when the caller sends a longer list in parts), so that its text depends neither on the
        batch size nor on which requests share its batch."""
        if occurrences is None:
            occurrences = occurrences_in(requests)
        generators = [torch.Generator(device="cpu").manual_seed(stream_seed(seed, request.key, occurrence))
                      for request, occurrence in zip(requests, occurrences)]
        rendered = [self.encode(r.context) for r in requests]
        return self._generate_all(requests, rendered, generators, batch_size or AUTO_GENERATION_BATCH, progress)

    def _generate_all(self, requests: Sequence[GenerateRequest], rendered: list[list[int]],
                      generators: list[torch.Generator], batch_size: int, progress: Progress | None
                      ) -> list[Generation]:
        """The plain path: fixed batches of similar prompt lengths, each decoded until all its sequences end."""
        order = sorted(range(len(requests)), key=lambda i: -len(rendered[i]))  # similar lengths share a batch
        outputs: list[Generation] = [None] * len(requests)  # type: ignore[list-item]
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            generations = self._generate_batch([requests[i] for i in chunk], [rendered[i] for i in chunk],
                                               [generators[i] for i in chunk])
            for index, generation in zip(chunk, generations):
                outputs[index] = generation
            if progress:
                progress(len(chunk))
        return outputs

    # ---- the math ----------------------------------------------------------------------------------------

    def _score_token_pairs(self, pairs: list[tuple[list[int], list[int]]], batch_size: int | None,
                           on_done: Callable[[list[int]], Any], kind: str) -> list[LoglikelihoodResult]:
        """Scores each (context, continuation) token pair. Pairs whose model input is identical (the four
        one-token answers of a multiple-choice question) share one forward pass."""
        inputs: dict[tuple[int, ...], list[int]] = {}  # model input -> indices of the pairs that need it
        for index, (context, continuation) in enumerate(pairs):
            whole = (context + continuation)[-(self.max_length + 1):]
            inputs.setdefault(tuple(whole[:-1]), []).append(index)
        results: list[LoglikelihoodResult | None] = [None] * len(pairs)
        # Longest first: the first batch is the largest, so a batch size that does not fit fails at once.
        ordered = sorted(inputs, key=lambda tokens: (-len(tokens), tokens))
        for batch in _batches(ordered, batch_size or len(ordered), MAX_BATCH_POSITIONS):
            width = len(batch[0])
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            for row, tokens in enumerate(batch):
                ids[row, :len(tokens)] = torch.tensor(tokens)
            timed = self.profiler.batch(kind, [len(t) for t in batch]) if self.profiler else nullcontext()
            with timed, torch.inference_mode():
                logits, _ = self._forward(ids.to(self.device))
                for row, tokens in enumerate(batch):
                    for index in inputs[tokens]:
                        continuation = pairs[index][1]
                        n = len(continuation)
                        span = logits[row, len(tokens) - n:len(tokens)].float()
                        target = torch.tensor(continuation, device=span.device)
                        logprobs = span.gather(-1, target[:, None])[:, 0] - span.logsumexp(-1)
                        greedy = bool((span.argmax(-1) == target).all())
                        results[index] = LoglikelihoodResult(float(logprobs.double().sum()), greedy)
            on_done([index for tokens in batch for index in inputs[tokens]])
        return results  # type: ignore[return-value]

    def _generate_batch(self, requests: list[GenerateRequest], encoded: list[list[int]],
                        generators: list[torch.Generator]) -> list[Generation]:
        max_new = max(r.max_tokens for r in requests)
        budget = max(1, self.max_length - max_new)  # as lm-eval: the context is cut from the left to leave room
        contexts = [tokens[-budget:] for tokens in encoded]
        ids, mask = left_padded(contexts, self.device)
        generated: list[list[int]] = [[] for _ in requests]
        finished = [False] * len(requests)
        texts = [""] * len(requests)
        reasons = ["length"] * len(requests)
        cache = None
        step_input = ids
        timeline = self.profiler.generation([len(c) for c in contexts]) if self.profiler else UNTIMED
        with timeline, torch.inference_mode():
            for _ in range(max_new):
                logits, cache = self._forward(step_input, attention_mask=mask, cache=cache)
                last = logits[:, -1].float().cpu()
                next_tokens = last.argmax(-1)
                for row, request in enumerate(requests):
                    if finished[row]:
                        continue  # a finished sequence rides along (its token is ignored) until the batch ends
                    if request.temperature > 0:
                        next_tokens[row] = sample_token(last[row], request.temperature, request.top_p, generators[row])
                    token = int(next_tokens[row])
                    if token == self.tokenizer.eos_token_id:
                        finished[row], reasons[row] = True, "eos"
                        timeline.finish(row)
                        continue
                    generated[row].append(token)
                    timeline.token(row)
                    texts[row] = self.tokenizer.decode(generated[row], skip_special_tokens=True)
                    cut = cut_at_stop(texts[row], request.stop)
                    if cut is not None:
                        texts[row], finished[row], reasons[row] = cut, True, "stop"
                    elif len(generated[row]) >= request.max_tokens:
                        finished[row] = True
                    if finished[row]:
                        timeline.finish(row)
                timeline.step_done()
                if all(finished):
                    break
                step_input = next_tokens[:, None].to(self.device)
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        return [Generation(*fields) for fields in zip(texts, generated, reasons)]


def _batches(ordered: list[tuple[int, ...]], batch_size: int, max_positions: int) -> Iterable[list[tuple[int, ...]]]:
    """Consecutive groups of at most `batch_size` inputs whose padded size stays within `max_positions`
    (a single input longer than that still gets a batch of its own)."""
    batch: list[tuple[int, ...]] = []
    for tokens in ordered:
        width = len(batch[0]) if batch else len(tokens)
        if batch and (len(batch) >= batch_size or width * (len(batch) + 1) > max_positions):
            yield batch
            batch = []
        batch.append(tokens)
    if batch:
        yield batch
