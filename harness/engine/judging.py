"""What a task asks of a judge model: conversations to read, and the judgments it writes back, or how likely it finds
each of a few fixed replies (a rating, a verdict) when it is asked to score by log-probabilities.

A judged task (MT-Bench) builds each judge conversation itself, from its own prompts (the judge's system message and
a filled-in template), and reads the judge's text back with its own rules; the judge only answers. The engine lends
the run's judge to tasks through TaskOptions.judge (harness/engine/model_judge.py implements it over any model of
the harness, the evaluated one by default), so that tasks never see a model, and every judgment goes through the
response cache and the profiler like the answers it grades.
"""

from __future__ import annotations

from typing import Protocol


class Judge(Protocol):
    def identity(self) -> dict:
        """Who judges and how (spec, fingerprint, implementation, dtype, chat template, token cap): part of the
        judged task's settings, so of its prompt hash, and of the run record."""

    def __call__(self, conversations: list[list[dict[str, str]]], *, max_tokens: int, temperature: float,
                 scope: str) -> list[str]:
        """The judge's reply to each conversation (messages with "role" and "content", ending with a user turn), at
        most `max_tokens` new tokens at `temperature`; `scope` names the work for the profiler and the record
        (e.g. "mt_bench_math:judge"). The replies are a model's output: hostile text."""

    def likelihoods(self, conversations: list[list[dict[str, str]]], replies: list[str], *,
                    scope: str) -> list[list[float]]:
        """For each conversation, log P(reply | conversation) of each of `replies` as the judge's answer (its chat
        template's reply start, then the reply): what a judge that scores by log-probabilities reads (G-Eval)."""
