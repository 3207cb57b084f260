"""The drops a gate is declared to catch: `TASK:METRIC=SIZE`, SIZE absolute in the metric's units (0.03: three
points of accuracy) or relative to the baseline's value with a % sign (2%: two per cent of perplexity)."""

from __future__ import annotations

from harness.errors import UserError


def parse_min_effect(text: str) -> tuple[str, str]:
    """("task:metric", "size") from "task:metric=size", checked; the size stays text, as the baseline stores it."""
    key, separator, size = text.partition("=")
    task, colon, metric = key.partition(":")
    if not separator or not colon or not task or not metric:
        raise UserError(f"--min-effect takes TASK:METRIC=SIZE (e.g. mmlu:acc=0.03 or wikitext:word_perplexity=2%), "
                        f"got {text!r}")
    effect_size(size)
    return key, size


def effect_size(size: str) -> tuple[float, bool]:
    """(size, relative) of "0.03" or "2%"."""
    relative = size.endswith("%")
    try:
        value = float(size[:-1] if relative else size)
    except ValueError:
        raise UserError(f"a minimum effect is a number or a percentage (0.03, 2%), got {size!r}") from None
    if not 0 < value < float("inf"):
        raise UserError(f"a minimum effect must be a positive number, got {size!r}")
    return (value / 100, True) if relative else (value, False)


def min_effects(declared: dict[str, str]) -> dict[str, tuple[float, bool]]:
    return {key: effect_size(str(size)) for key, size in declared.items()}
