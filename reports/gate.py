"""The comparison table of `harness compare` and `harness gate`: one row per task metric and systems figure, with the
paired difference, its interval, the correlation of the runs, the adjusted p-value, the smallest change the
comparison could have detected (MDE, 80 % power) and the verdict (harness/gate/compare.py)."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

COLUMNS = ("task", "metric", "role", "n", "baseline", "run", "difference [95% CI]", "corr", "p adj", "MDE",
           "verdict")


def number(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isinf(value):
        return "none"  # an MDE beyond any possible change
    return f"{value:.4g}"


def difference(row: dict) -> str:
    if row.get("relative_change") is not None:
        return f"{row['relative_change']:+.1%}"
    if row.get("difference") is None:
        return ""
    interval = row.get("interval")
    shown = f"{row['difference']:+.4g}"
    return f"{shown} [{number(interval[0])}, {number(interval[1])}]" if interval else shown


def print_gate(rows: list[dict], title: str) -> None:
    table = Table(title=title)
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("task", "metric", "role", "verdict") else "right")
    reasons: dict[str, int] = {}  # each reason once, under the table, so that the verdict column stays narrow
    for row in rows:
        verdict = row["verdict"]
        if row.get("reason"):
            verdict += f" [{reasons.setdefault(row['reason'], len(reasons) + 1)}]"
        mde = number(row.get("mde"))
        if row.get("min_effect") is not None:
            mde += f" (need {number(row['min_effect'])})"
        table.add_row(row["task"], row["metric"], row["role"], number(row.get("n")), number(row.get("baseline")),
                      number(row.get("run")), difference(row), number(row.get("correlation")),
                      number(row.get("p_adjusted")), mde, verdict)
    console = Console()
    if not console.is_terminal:  # a CI log: wide enough that the numbers are not cut to "7.843e…"
        console = Console(width=220)
    console.print(table)
    for reason, footnote in reasons.items():
        console.print(f"[{footnote}] {reason}", markup=False, highlight=False)
