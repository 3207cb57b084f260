"""What proposes draft tokens for speculative decoding (harness/models/speculation.py): a smaller model, or the text
itself (prompt lookup). The continuous batcher (harness/models/generation.py) keeps a speculator in step with its
batch: `join` when sequences join, `propose` before each target step, `kept` once the target has ruled, `keep`
when sequences leave. A sequence's "history" is its context as the model reads it followed by its tokens so far.
"""

from __future__ import annotations

from typing import Protocol

import torch

from harness.errors import UserError
from harness.models.attention import ReferenceModel
from harness.models.batch_cache import BatchCache
from harness.models.decoding import head_logits, left_padded, sampling_probs


class Speculator(Protocol):
    def join(self, contexts: list[list[int]]) -> None:
        """New rows, after the batch's, with their contexts."""

    def propose(self, histories: list[list[int]], requests: list, generators: list[torch.Generator],
                k: int) -> tuple[list[list[int]], list[torch.Tensor | None]]:
        """Up to k draft tokens for each row and, for a sampled row, the distributions (drafts, vocab) they were
        drawn from (None: point masses, or a greedy row)."""

    def kept(self, drafted: int, kept: list[int]) -> None:
        """The target kept the first kept[i] of row i's drafts, out of the `drafted` this round proposed."""

    def keep(self, rows: list[int]) -> None:
        """Only these rows stay in the batch."""


class PromptLookup:
    """Drafts copied from the history: the longest n-gram (at most `max_ngram` tokens) that ends the history and
    occurs earlier in it, at its first occurrence with tokens after it, proposes the up to k tokens that followed it
    there, cut before an end-of-sequence token: the rule of transformers' PromptLookupCandidateGenerator (5.25.0;
    Saxena's prompt lookup decoding), run per row. No state: every round reads the histories afresh."""

    def __init__(self, max_ngram: int, eos_token_id: int | None):
        self.max_ngram, self.eos = max_ngram, eos_token_id

    def join(self, contexts):
        pass

    def kept(self, drafted, kept):
        pass

    def keep(self, rows):
        pass

    def propose(self, histories, requests, generators, k):
        drafts = [self.lookup(history, k) for history in histories]
        return drafts, [None] * len(drafts)

    def lookup(self, history: list[int], k: int) -> list[int]:
        tokens = torch.tensor(history)
        for size in range(min(self.max_ngram, len(history) - 1), 0, -1):
            windows = tokens.unfold(0, size, 1)  # (len - size + 1, size)
            starts = (windows == tokens[-size:]).all(1).nonzero()[:, 0].tolist()
            for start in starts:
                follow = history[start + size:start + size + k]
                if follow:  # the history's own end matches too, with nothing after it
                    if self.eos in follow:
                        follow = follow[:follow.index(self.eos)]
                    return follow
        return []


class DraftModel:
    """Drafts from a smaller model with the target's tokenizer, k tokens one after another, greedy or sampled as
    each row's request asks. It keeps its own KV cache of every row, holding the row's history but its last two
    tokens: each round starts by reading those two (whether the target kept the last draft or not, the draft model
    then has what it lacks), and the rejected drafts are forgotten as the target's cache forgets them."""

    def __init__(self, model: ReferenceModel, device: torch.device):
        self.model, self.device = model, device
        self.batch: BatchCache | None = None

    def join(self, contexts):
        ids, mask = left_padded(contexts, self.device)
        joining = BatchCache(self.model.new_cache(), mask)
        self.model(ids, attention_mask=mask, cache=joining.cache, head=False)
        joining.forget_last([1] * len(contexts))  # a context's last token is read with the first token chosen
        if self.batch is None:
            self.batch = joining
        else:
            self.batch.merge(joining)

    def propose(self, histories, requests, generators, k):
        step = torch.tensor([history[-2:] for history in histories], device=self.device)
        drafts: list[list[int]] = [[] for _ in histories]
        distributions: list[list[torch.Tensor]] = [[] for _ in histories]
        for position in range(k):
            self.batch.extend(step.shape[1])
            hidden = self.model(step, attention_mask=self.batch.mask, cache=self.batch.cache, head=False)
            logits = head_logits(self.model, hidden[:, -1])
            for row, request in enumerate(requests):
                if request.temperature > 0:
                    q = sampling_probs(logits[row], request.temperature, request.top_p)
                    token = int(torch.multinomial(q, 1, generator=generators[row]))
                    distributions[row].append(q)
                else:
                    token = int(logits[row].argmax())
                drafts[row].append(token)
            step = torch.tensor([[d[-1]] for d in drafts], device=self.device)
        # The last draft is proposed but not read: the cache holds the two tokens read first and k - 1 drafts.
        return drafts, [torch.stack(q) if q else None for q in distributions]

    def kept(self, drafted, kept):
        # The cache gained drafted + 1 positions: the row's last two tokens and drafted - 1 drafts. It should now
        # hold the row's new history but its last two tokens, which is drafted - kept[i] fewer.
        self.batch.forget_last([drafted - count for count in kept])

    def keep(self, rows):
        if rows:
            self.batch.keep(rows)
        else:
            self.batch = None


def check_draft(target, draft) -> None:
    """A draft model must speak the target's tokens: the same vocabulary, token for token, and the same number of
    logits (a distribution over the same ids)."""
    if draft.tokenizer.get_vocab() != target.tokenizer.get_vocab():
        raise UserError(f"the draft model {draft.spec} has another tokenizer than {target.spec}; speculative decoding "
                        "needs the target's tokenizer (for example a variant of the same model)")
    if draft.model.config.vocab_size != target.model.config.vocab_size:
        raise UserError(f"the draft model {draft.spec} has {draft.model.config.vocab_size} logits a token, "
                        f"{target.spec} has {target.model.config.vocab_size}: their distributions cannot be compared")
