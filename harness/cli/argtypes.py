"""argparse types for the `harness` command's flags, each with a one-line message that says what was expected."""

from __future__ import annotations

import argparse

from harness.errors import UserError
from harness.gate.min_effect import parse_min_effect


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


def min_effect(text: str) -> tuple[str, str]:
    try:
        return parse_min_effect(text)
    except UserError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
