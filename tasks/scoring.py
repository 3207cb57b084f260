"""Scorers that several benchmarks share, each written once, each as lm-evaluation-harness 0.4.13 computes it.

  argmax_choice         the chosen answer of a multiple-choice question: the choice with the highest loglikelihood
                        (optionally divided by each choice's length, lm-eval's acc_norm); ties go to the first
  relative_likelihoods  exp(ll_i - max ll) per choice: probabilities up to one common factor
  regex_extract         lm-eval's regex filter: the chosen match of a pattern, or "[invalid]"
  exact_match           lm-eval's exact_match metric, with its ignore_case and regexes_to_ignore options

Scores must not move by one bit when a task starts using these: each function keeps the operations, and their
order, of the code it replaced.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

FALLBACK = "[invalid]"  # lm-eval's RegexFilter default when nothing matches


def choice_logprobs(responses: Sequence) -> np.ndarray:
    """The loglikelihood of each choice (LoglikelihoodResult responses), as float64 like lm-eval's numpy."""
    return np.array([r.logprob for r in responses], dtype=np.float64)


def argmax_choice(responses: Sequence, lengths: Sequence[float] | None = None) -> int:
    """The index of the most likely choice. np.argmax, as lm-eval uses it, so a tie goes to the first of the tied
    choices (a model that gives every choice the same loglikelihood answers the first). With `lengths` (lm-eval's
    acc_norm: each choice's length in characters), each loglikelihood is divided by its choice's length first."""
    logprobs = choice_logprobs(responses)
    if lengths is not None:
        logprobs = logprobs / np.array(lengths, dtype=np.float64)
    return int(np.argmax(logprobs))


def relative_likelihoods(responses: Sequence) -> np.ndarray:
    """exp(ll_i - max ll): each choice's probability up to a factor shared by all choices, so that ratios of sums
    of them are normalized probabilities. The shift keeps exp from underflowing to 0 for long choices."""
    logprobs = choice_logprobs(responses)
    return np.exp(logprobs - logprobs.max())


def regex_extract(pattern: str, text: str, group_select: int = 0, fallback: str = FALLBACK) -> str:
    """lm-eval's regex filter: the `group_select`-th match of `pattern` in `text` (negative counts from the end);
    for a pattern with several groups, the first non-empty group of that match."""
    matches = re.findall(pattern, text)
    if not matches:
        return fallback
    match = matches[group_select]
    if isinstance(match, tuple):
        match = next((group for group in match if group), fallback)
    return match.strip()


def exact_match(prediction: str, reference: str, regexes_to_ignore: Sequence[str] = (),
                ignore_case: bool = False) -> float:
    """lm-eval's exact_match (HF evaluate's): 1.0 when the two strings are equal after removing every match of
    each of `regexes_to_ignore` from both (in order), and lowering case when asked."""
    prediction, reference = (normalize(text, regexes_to_ignore, ignore_case) for text in (prediction, reference))
    return float(prediction == reference)


def normalize(text: str, regexes_to_ignore: Sequence[str], ignore_case: bool) -> str:
    for pattern in regexes_to_ignore:
        text = re.sub(pattern, "", text)
    return text.lower() if ignore_case else text
