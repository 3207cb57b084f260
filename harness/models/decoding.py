"""The pieces of decoding that every generation loop shares: a left-padded batch, a sampled token, a cut at the
first stop string."""

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


def sample_token(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """One token from softmax(logits / temperature), restricted to the nucleus: the most probable tokens whose
    probabilities, taken in order, first reach top_p (the token that crosses it included), as Holtzman et al.
    2020 and transformers' TopPLogitsWarper define it."""
    probs = (logits / temperature).softmax(-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        mass_before = sorted_probs.cumsum(0) - sorted_probs
        sorted_probs[mass_before >= top_p] = 0.0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator)[0]


def cut_at_stop(text: str, stops: Iterable[str]) -> str | None:
    positions = [text.find(s) for s in stops if s and s in text]
    return text[:min(positions)] if positions else None
