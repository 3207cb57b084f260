"""The regression gate's table: one row per metric and systems figure, with the verdict (harness/gate/compare.py)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def number(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def print_gate(rows: list[dict], title: str) -> None:
    table = Table(title=title)
    for column in ("task", "metric", "baseline", "run", "difference", "interval", "p", "verdict"):
        table.add_column(column, justify="left" if column in ("task", "metric", "verdict") else "right")
    for row in rows:
        interval = row.get("interval")
        verdict = row["verdict"] + (f" ({row['reason']})" if row.get("reason") else "")
        table.add_row(row["task"], row["metric"], number(row.get("baseline")), number(row.get("run")),
                      number(row.get("difference")),
                      f"[{number(interval[0])}, {number(interval[1])}]" if interval else "",
                      number(row.get("p_value")), verdict)
    console = Console()
    if not console.is_terminal:  # a CI log: wide enough that the numbers are not cut to "7.843e…"
        console = Console(width=200)
    console.print(table)
