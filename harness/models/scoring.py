"""Loglikelihood scoring for the reference models: which tokens are computed, in which batches, and which logits.

Every (context, continuation) pair becomes one model input, the pair's tokens minus the last; the logits at the
continuation's positions give its loglikelihood. Three kinds of work are not repeated:
  - Identical inputs share one forward pass (a multiple-choice question's one-token answers have one input).
  - Inputs that share a prefix share its keys and values. Inputs are sorted, so that shared prefixes are
    neighbours. A run of inputs sharing enough tokens (prefix_groups) computes the prefix once, with a batch of
    one; the rest of each input runs in batches on top of its cache, which every row reads without a copy
    (attention.shared_prefix_attention). Every question of an MMLU subject shares its 5-shot preamble. Within a
    group the same happens again: TruthfulQA mc2's answers to one question share the QA preamble (level one)
    and the question (level two), so the question's context is computed once for all its continuations.
  - The output head runs only where a continuation is predicted, in chunks: for SmolLM2 it is a fifth of a
    token's FLOPs, and an 8192-token window's full logits are 1.6 GB in fp32.
Batches hold at most `batch_size` inputs and `max_positions` padded positions, longest first, so that a budget too
large fails on the first batch rather than the last. `batch_size=None` is the "auto" policy: no count limit, a
position budget from the memory free now (auto_max_positions), and a batch that still runs out of memory is split
in two and retried, down to single inputs, so it neither crashes nor hangs. Results equal the plain path's within
float noise (up to about 3e-5 in log-probability on few-shot prompts; tests/test_scoring.py holds them to
1e-4) whatever the policy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import psutil
import torch

from harness.engine.requests import LoglikelihoodResult
from harness.models.attention import ReferenceModel, SharedPrefixCache

MAX_POSITIONS = 16384  # with a fixed batch size; and the most the auto budget gives a GPU
# On a CPU small batches are fastest: the activations of a big one overflow the caches. Measured on this project's
# 2-core machine, the 135 questions of MMLU anatomy 5-shot took 13.0 s at 1024 positions a batch, 14.6 s at 2048,
# 19.4 s at 4096 and 37.2 s at 16384.
CPU_AUTO_POSITIONS = 1024
# A prefix computed on its own costs a forward pass of a batch of one: worth it when the tokens it saves, (members
# - 1) x its length, are at least MIN_SAVED_TOKENS, and only for prefixes of at least MIN_SHARED_STEP tokens (a
# question shared by its answers is; "Question: What" shared by unrelated questions is not).
MIN_SHARED_STEP = 8
MIN_SAVED_TOKENS = 32
PREFIX_SCORES_BYTES = 512 << 20  # a batch's attention scores against its prefix (Scorer._positions_after)
HEAD_CHUNK = 2048  # positions whose logits exist at once (2048 x 49152 x 4 bytes = 400 MB)


@dataclass
class Prefix:
    """Positions [0, length) already computed: their cache (batch of one) and final hidden states (length, H)."""
    length: int
    cache: Any
    hidden: torch.Tensor | None
    shared: SharedPrefixCache | None = None  # what the prefix's batches read, made once (it packs the prefix)


def common_prefix_length(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def prefix_groups(inputs: list[tuple[int, ...]], start: int) -> list[tuple[int, list[tuple[int, ...]]]]:
    """Sorted `inputs` (all sharing positions [0, start)) as groups (shared length, members): consecutive inputs
    sharing at least MIN_SHARED_STEP tokens beyond `start`, kept as a group when sharing saves at least
    MIN_SAVED_TOKENS. The shared length leaves every member at least one token of its own. An input in no group
    is a group of one with shared length `start` (nothing more to share)."""
    groups: list[list] = []
    for tokens in inputs:
        if groups:
            shared, members = groups[-1]
            common = start + common_prefix_length(members[0][start:shared], tokens[start:shared])
            if common - start >= MIN_SHARED_STEP:
                groups[-1][0] = common
                members.append(tokens)
                continue
        groups.append([len(tokens), [tokens]])
    kept = []
    for shared, members in groups:
        shared = min(shared, min(len(t) for t in members) - 1)
        if len(members) > 1 and (len(members) - 1) * (shared - start) >= MIN_SAVED_TOKENS:
            kept.append((shared, members))
        else:
            kept.extend((start, [tokens]) for tokens in members)
    return kept


def batches(ordered: list[tuple[int, ...]], start: int, batch_size: int | None,
            max_positions: int) -> Iterable[list[tuple[int, ...]]]:
    """Consecutive groups of inputs, longest first, of at most `batch_size` whose padded new positions (beyond
    `start`) stay within `max_positions`; an input longer than that still gets a batch of its own."""
    batch: list[tuple[int, ...]] = []
    for tokens in ordered:
        width = len(batch[0]) - start if batch else len(tokens) - start
        full = batch_size is not None and len(batch) >= batch_size
        if batch and (full or width * (len(batch) + 1) > max_positions):
            yield batch
            batch = []
        batch.append(tokens)
    if batch:
        yield batch


def auto_max_positions(model: ReferenceModel, device: torch.device) -> int:
    """Padded positions per batch (at most CPU_AUTO_POSITIONS on a CPU, MAX_POSITIONS on a GPU) whose activations
    take at most a quarter of the memory free now. Per position about 12 hidden-sized and 3 intermediate-sized
    fp32 vectors live at once (inference frees each layer's as the next starts); the head's logits are bounded
    separately (HEAD_CHUNK)."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    hidden = model.lm_head.in_features
    intermediate = max([m.out_features for m in linears if m is not model.lm_head] + [hidden])
    per_position = 4 * (12 * hidden + 3 * intermediate)
    if device.type == "cuda":
        free, most = torch.cuda.mem_get_info(device)[0], MAX_POSITIONS
    else:
        free, most = psutil.virtual_memory().available, CPU_AUTO_POSITIONS
    return int(max(256, min(most, free // 4 // per_position)))


def out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and ("out of memory" in str(error) or "can't allocate" in str(error)))


class Scorer:
    """Scores token pairs on `adapter`'s reference model (attention.ReferenceModel)."""

    def __init__(self, adapter, batch_size: int | None, kind: str):
        self.adapter, self.device = adapter, adapter.device
        self.model: ReferenceModel = adapter.model
        self.batch_size, self.kind = batch_size, kind
        self.max_positions = MAX_POSITIONS if batch_size else auto_max_positions(self.model, self.device)

    def score(self, pairs: list[tuple[list[int], list[int]]], on_done: Callable[[list[int]], Any]
              ) -> list[LoglikelihoodResult]:
        max_length = self.adapter.max_length
        self.pairs = pairs
        self.inputs: dict[tuple[int, ...], list[int]] = {}  # model input -> indices of the pairs that need it
        for index, (context, continuation) in enumerate(pairs):
            whole = (context + continuation)[-(max_length + 1):]
            self.inputs.setdefault(tuple(whole[:-1]), []).append(index)
        self.results: list[LoglikelihoodResult | None] = [None] * len(pairs)
        self.on_done = on_done
        with torch.inference_mode():
            self._score_group(sorted(self.inputs), Prefix(0, None, None))
        return self.results  # type: ignore[return-value]

    def _score_group(self, members: list[tuple[int, ...]], prefix: Prefix) -> None:
        """Scores `members`, which all begin with the prefix's tokens, on top of its cache."""
        leaves = []
        for shared, group in prefix_groups(members, prefix.length):
            if shared > prefix.length:
                self._score_group(group, self._extend(prefix, group[0][prefix.length:shared]))
            else:
                leaves.extend(group)
        leaves.sort(key=lambda tokens: (-len(tokens), tokens))
        for batch in batches(leaves, prefix.length, self.batch_size, self._positions_after(prefix.length)):
            self._score_batch_or_split(batch, prefix)

    def _positions_after(self, prefix_length: int) -> int:
        """The position budget of batches over a prefix: their attention scores against it (positions x heads x
        prefix x 4 bytes) stay within PREFIX_SCORES_BYTES too."""
        heads = self.model.config.num_attention_heads
        return max(1, min(self.max_positions, PREFIX_SCORES_BYTES // (4 * heads * max(1, prefix_length))))

    def _score_batch_or_split(self, batch: list[tuple[int, ...]], prefix: Prefix) -> None:
        if self.batch_size is not None or len(batch) == 1:
            return self._score_batch(batch, prefix)  # a fixed batch size is the user's to choose: errors surface
        try:
            self._score_batch(batch, prefix)
        except (RuntimeError, torch.OutOfMemoryError) as error:
            if not out_of_memory(error):
                raise
            self.max_positions = max(256, self.max_positions // 2)  # later batches start smaller
            half = len(batch) // 2
            self._score_batch_or_split(batch[:half], prefix)
            self._score_batch_or_split(batch[half:], prefix)

    def _extend(self, prefix: Prefix, tokens: tuple[int, ...]) -> Prefix:
        """The prefix followed by `tokens`, computed once with a batch of one."""
        cache = self._copy(prefix.cache) if prefix.cache is not None else self.model.new_cache()
        ids = torch.tensor([tokens], dtype=torch.long, device=self.device)
        timed = self.adapter.profiler.batch(self.kind, [len(tokens)]) if self.adapter.profiler else nullcontext()
        with timed:
            hidden = self.model(ids, cache=cache, head=False)[0]
        return Prefix(prefix.length + len(tokens), cache,
                      hidden if prefix.hidden is None else torch.cat([prefix.hidden, hidden]))

    def _copy(self, cache):
        """A new cache over the same keys and values: growing it leaves the original as it was."""
        copy = self.model.new_cache()
        copy.keys, copy.values = list(cache.keys), list(cache.values)
        return copy

    def _score_batch(self, batch: list[tuple[int, ...]], prefix: Prefix) -> None:
        start = prefix.length
        width = len(batch[0]) - start
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        for row, tokens in enumerate(batch):  # right padding: it never changes a real position's logits
            ids[row, :len(tokens) - start] = torch.tensor(tokens[start:])
        if prefix.cache is not None and prefix.shared is None:
            prefix.shared = SharedPrefixCache(prefix.cache)
        cache = prefix.shared
        timed = (self.adapter.profiler.batch(self.kind, [len(t) - start for t in batch])
                 if self.adapter.profiler else nullcontext())
        with timed:
            hidden = self.model(ids.to(self.device), cache=cache, head=False)
            # The hidden state of each position that predicts a continuation token, from the prefix or the batch.
            rows, targets, owners = [], [], []
            for row, tokens in enumerate(batch):
                for index in self.inputs[tokens]:
                    continuation = self.pairs[index][1]
                    first = len(tokens) - len(continuation)
                    if first < start:
                        rows.append(prefix.hidden[first:start])
                    rows.append(hidden[row, max(first, start) - start:len(tokens) - start])
                    targets.extend(continuation)
                    owners.extend([index] * len(continuation))
            logprobs, greedy = self._read_head(torch.cat(rows) if rows else hidden[:0, 0],
                                               torch.tensor(targets, dtype=torch.long, device=self.device))
        done = [index for tokens in batch for index in self.inputs[tokens]]
        totals = dict.fromkeys(done, 0.0)  # an empty continuation has loglikelihood 0 and is greedy
        all_greedy = dict.fromkeys(done, True)
        for owner, logprob, is_greedy in zip(owners, logprobs.tolist(), greedy.tolist()):
            totals[owner] += logprob
            all_greedy[owner] = all_greedy[owner] and is_greedy
        for owner, total in totals.items():
            self.results[owner] = LoglikelihoodResult(total, all_greedy[owner])
        self.on_done(done)

    def _read_head(self, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per position: log-probability of the target token and whether it is the argmax, the logits made
        HEAD_CHUNK positions at a time."""
        logprobs, greedy = [], []
        for begin in range(0, len(targets), HEAD_CHUNK):
            logits = self.model.lm_head(hidden[begin:begin + HEAD_CHUNK]).float()
            target = targets[begin:begin + HEAD_CHUNK]
            logprobs.append(logits.gather(-1, target[:, None])[:, 0] - logits.logsumexp(-1))
            greedy.append(logits.argmax(-1) == target)
        return torch.cat(logprobs), torch.cat(greedy)
