"""The pieces of decoding that every generation loop shares: a left-padded batch, the logits of the positions that
choose a token, a sampled token, a cut at the first stop string."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def left_padded(contexts: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask (1 for real tokens) of a left-padded batch: every sequence's next token goes
    in the last column."""
    width = max(len(c) for c in contexts)
    ids = torch.zeros(len(contexts), width, dtype=torch.long)
    mask = torch.zeros(len(contexts), width, dtype=torch.long)
    for row, tokens in enumerate(contexts):
        ids[row, width - len(tokens):] = torch.tensor(tokens)
        mask[row, width - len(tokens):] = 1
    return ids.to(device), mask.to(device)


def sampling_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """The distribution a token is sampled from: softmax(logits / temperature) over the last dimension, restricted
    to the nucleus, the most probable tokens whose probabilities, taken in order, first reach top_p (the token that
    crosses it included), as Holtzman et al. 2020 and transformers' TopPLogitsWarper define it; not renormalised
    (torch.multinomial does not need it)."""
    probs = (logits.float() / temperature).softmax(-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs
        sorted_probs[mass_before >= top_p] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return probs


def sample_token(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """One token from sampling_probs(logits, temperature, top_p), logits of one position."""
    return torch.multinomial(sampling_probs(logits, temperature, top_p), 1, generator=generator)[0]


def cut_at_stop(text: str, stops: Iterable[str]) -> str | None:
    positions = [text.find(s) for s in stops if s and s in text]
    return text[:min(positions)] if positions else None


def head_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The logits (rows, vocab), in fp32 on the CPU, of final hidden states (rows, hidden): the head runs on the
    positions whose next token is chosen only. A plain linear head (on a GPU, or with packed linear layers off) runs
    as `weight @ hidden.T`, which MKL runs twice as fast as F.linear for a few rows on this CPU."""
    head = model.lm_head
    if type(head) is torch.nn.Linear and head.bias is None and not (head._forward_hooks or head._forward_pre_hooks):
        return (head.weight @ hidden.T).T.float().cpu()
    return head(hidden).float().cpu()
