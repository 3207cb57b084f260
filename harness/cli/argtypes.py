"""argparse types for the `harness` command's flags, each with a one-line message that says what was expected."""

from __future__ import annotations

import argparse

from harness.errors import UserError
from harness.gate.min_effect import parse_min_effect
from harness.robustness.perturbations import parse_perturbations, split_specs


def int_at_least(minimum: int):
    """An argparse type for integers >= minimum, with a message that names the bound."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def batch_size_or_auto(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int_at_least(1)(text)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"{error} (or auto)") from None


def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def positive_float_list(text: str) -> list[float]:
    values = [positive_float(part) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive numbers, got {text!r}")
    return values


def rate_range(text: str) -> tuple[float, float]:
    low, colon, high = text.partition(":")
    if not colon:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH in requests per second, got {text!r}")
    low_value, high_value = positive_float(low), positive_float(high)
    if low_value >= high_value:
        raise argparse.ArgumentTypeError(f"LOW must be below HIGH, got {text!r}")
    return low_value, high_value


def share(text: str) -> float:
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"a share between 0 and 1, got {text}")
    return value


def min_effect(text: str) -> tuple[str, str]:
    try:
        return parse_min_effect(text)
    except UserError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def perturb_specs(text: str) -> tuple[str, ...]:
    """--perturb's comma-separated KIND=VALUE list, each checked (the run checks again that each applies)."""
    specs = split_specs(text)
    if not specs:
        raise argparse.ArgumentTypeError("expected KIND=VALUE, e.g. choices=permute,typos=0.05")
    try:
        parse_perturbations(specs)
    except UserError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--perturb").removeprefix(":").strip()) from None
    return specs


def limit_spec(text: str) -> tuple[int | None, tuple[str, ...]]:
    """--limit N, or NAME=N pairs for single tasks or groups, or both: "10", "mmlu_stem=70,wikitext=5",
    "10,mmlu_stem=70". Returns (the default limit or None, the "NAME=N" pairs)."""
    default, pairs = None, []
    for part in (part.strip() for part in text.split(",") if part.strip()):
        name, separator, count = part.rpartition("=")
        try:
            value = int(count)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected N or NAME=N, got {part!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"a limit must be at least 1, got {part!r}")
        if not separator:
            if default is not None:
                raise argparse.ArgumentTypeError(f"two limits for all tasks in {text!r}")
            default = value
        elif not name:
            raise argparse.ArgumentTypeError(f"expected NAME=N, got {part!r}")
        else:
            pairs.append(f"{name}={value}")
    if default is None and not pairs:
        raise argparse.ArgumentTypeError(f"expected N or NAME=N, got {text!r}")
    return default, tuple(pairs)
