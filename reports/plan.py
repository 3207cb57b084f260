"""The table of `harness plan`: per declared drop, the documents needed, the --limit that gives them, their cost."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_plan(rows: list[dict], title: str, budget_minutes: float) -> None:
    table = Table(title=title)
    for column in ("task", "metric", "baseline", "drop", "noise", "documents", "of", "--limit", "CPU min", "status"):
        table.add_column(column, justify="left" if column in ("task", "metric", "noise", "status") else "right")
    for row in rows:
        table.add_row(row["task"], row["metric"], fmt(row["baseline"]), fmt(row["drop"]), row["noise"] or "",
                      fmt(row["documents"]), fmt(row["available"]), fmt(row["limit"]), fmt(row["minutes"], "{:.1f}"),
                      row["status"])
    console = Console() if Console().is_terminal else Console(width=200)
    console.print(table)
    reachable = [row for row in rows if row["status"] == "ok"]
    minutes = sum(row["minutes"] or 0 for row in reachable)
    limits = ",".join(f"{row['task']}={row['limit']}" for row in reachable)
    verdict = "fits" if minutes <= budget_minutes else "does not fit"
    print(f"{len(reachable)} of {len(rows)} drops can be caught: {minutes:.1f} CPU minutes at the baseline's speed, "
          f"which {verdict} in {budget_minutes:g}" + (f"; --limit {limits}" if limits else ""))


def fmt(value, pattern: str = "{:.4g}") -> str:
    return "" if value is None else pattern.format(value)
