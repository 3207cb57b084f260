"""Speculative decoding: what a run asks for (`--speculative draft=SPEC,k=4` or `--speculative ngram=3,k=4`) and the
rule that decides which draft tokens the target model keeps.

A speculator (harness/models/speculators.py) proposes up to k tokens for each sequence; the target model reads the
sequence's last token and the k drafts in one forward pass, which gives its distribution at each of the k + 1
positions; the rule below keeps a prefix of the drafts and adds one token of the target's own, so that every target
step yields between 1 and k + 1 tokens.

Greedy: a draft is kept while it is the target's argmax; the added token is the target's argmax after the last kept
draft. The output is plain greedy decoding's, token for token.

Sampled: the rejection rule of Leviathan, Kalman and Matias 2023 (Algorithm 1) and Chen et al. 2023 (Algorithm 2).
Draft x_j, drawn from the draft's distribution q_j, is kept with probability min(1, p_j(x_j) / q_j(x_j)), where p_j
is the target's sampling distribution (temperature and top_p applied, as plain sampling applies them); at the first
rejection the added token is drawn from norm(max(0, p_j - q_j)), and when every draft is kept, from p_{k+1}. Each
token then follows p exactly (Leviathan et al., Appendix A.1): the output has the distribution of plain sampling,
though not its text (the random stream is read differently). A prompt-lookup draft is a point mass: q_j(x_j) = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.errors import UserError


@dataclass(frozen=True)
class Speculation:
    k: int  # draft tokens proposed per target step
    draft: str | None = None  # a model spec whose tokenizer is the target's
    ngram: int | None = None  # prompt lookup: the longest n-gram matched

    def describe(self) -> str:
        source = f"draft={self.draft}" if self.draft is not None else f"ngram={self.ngram}"
        return f"{source},k={self.k}"


def parse_speculation(text: str) -> Speculation:
    """`draft=SPEC,k=K` or `ngram=N,k=K` (k defaults to 4). A draft spec may hold a comma (`+lora=PATH,merge`):
    a piece that is not `draft=`, `ngram=` or `k=` belongs to the piece before it."""
    fields: dict[str, str] = {}
    last = None
    for piece in text.split(","):
        name, equals, value = piece.partition("=")
        if equals and name.strip() in ("draft", "ngram", "k") and name.strip() not in fields:
            last = name.strip()
            fields[last] = value.strip()
        elif last == "draft":
            fields["draft"] += "," + piece
        else:
            raise UserError(f"--speculative {text!r}: expected draft=SPEC,k=K or ngram=N,k=K")
    if ("draft" in fields) == ("ngram" in fields):
        raise UserError(f"--speculative {text!r}: give exactly one of draft=SPEC (a draft model) or ngram=N "
                        "(prompt lookup)")
    k = _positive(fields.get("k", "4"), "k", text)
    if "draft" in fields:
        if not fields["draft"]:
            raise UserError(f"--speculative {text!r}: draft= needs a model spec")
        return Speculation(k=k, draft=fields["draft"])
    return Speculation(k=k, ngram=_positive(fields["ngram"], "ngram", text))


def _positive(value: str, name: str, text: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise UserError(f"--speculative {text!r}: {name} must be a whole number of at least 1, not {value!r}")
    return number


def accept_greedy(drafts: list[int], target_logits: torch.Tensor) -> list[int]:
    """The tokens a greedy target step yields: the drafts while each is the target's argmax, then the target's
    argmax after the last one kept. `target_logits` (len(drafts) + 1, vocab)."""
    choices = target_logits.argmax(-1).tolist()
    kept = 0
    while kept < len(drafts) and drafts[kept] == choices[kept]:
        kept += 1
    return drafts[:kept] + [choices[kept]]


def accept_sampled(drafts: list[int], draft_probs: torch.Tensor | None, target_probs: torch.Tensor,
                   generator: torch.Generator) -> list[int]:
    """The tokens a sampled target step yields, by the rejection rule (module docstring). `target_probs`
    (len(drafts) + 1, vocab) are the target's sampling distributions, unnormalised; `draft_probs` (len(drafts),
    vocab) the draft's, or None for point masses on the drafts (prompt lookup)."""
    p = target_probs.double()
    p = p / p.sum(-1, keepdim=True)
    q = None if draft_probs is None else draft_probs.double() / draft_probs.double().sum(-1, keepdim=True)
    for j, token in enumerate(drafts):
        q_token = 1.0 if q is None else float(q[j, token])
        p_token = float(p[j, token])
        uniform = float(torch.rand(1, generator=generator, dtype=torch.float64))
        if q_token > 0 and uniform < min(1.0, p_token / q_token):
            continue
        if q is None:
            residual = p[j].clone()
            residual[token] = 0.0
        else:
            residual = (p[j] - q[j]).clamp(min=0.0)
        if float(residual.sum()) <= 0.0:  # p equals q to the last bit: no mass to correct, p itself is right
            residual = p[j]
        return drafts[:j] + [int(torch.multinomial(residual, 1, generator=generator))]
    return drafts + [int(torch.multinomial(p[len(drafts)], 1, generator=generator))]
