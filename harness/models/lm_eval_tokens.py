"""lm-evaluation-harness 0.4.x's token rules that decide which tokens are scored: where a context's trailing
whitespace goes, and how a long text is cut into windows. Plain functions of text and token ids (no torch), shared
by the torch adapters and the `openai:` adapter."""

from __future__ import annotations


def move_trailing_whitespace(context: str, continuation: str) -> tuple[str, str]:
    """lm-eval's rule for a loglikelihood pair: the context's trailing whitespace belongs to the continuation."""
    spaces = len(context) - len(context.rstrip())
    if not spaces:
        return context, continuation
    return context[:-spaces], context[-spaces:] + continuation


def rolling_windows(tokens: list[int], prefix_token: int, max_length: int) -> list[tuple[list[int], list[int]]]:
    """(context, continuation) token windows covering `tokens`, each token predicted exactly once.

    lm-eval's get_rolling_token_windows with context_len=1, made disjoint: windows of up to `max_length`
    predicted tokens; the first is conditioned on the prefix token alone, and each later one on as many of the
    tokens before it as still fit in the model's window (a single token after a full window, more before a last,
    shorter one).
    """
    windows = []
    predicted = 0
    while predicted < len(tokens):
        length = min(max_length, len(tokens) - predicted)
        if predicted == 0:
            context = [prefix_token]
        else:
            context = tokens[predicted + length - max_length - 1:predicted]
        windows.append((context, tokens[predicted:predicted + length]))
        predicted += length
    return windows
