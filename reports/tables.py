"""The results on the terminal: the headline rows first (tasks and groups that belong to no group), then groups
inside groups (MMLU's categories), then the tasks inside groups compactly, several to a line (57 MMLU subjects fit
on a screen), with names never cut."""

from __future__ import annotations

import os

import pandas as pd
from rich.columns import Columns
from rich.console import Console
from rich.table import Table

from harness.record.tables import results_frame

COLUMNS = ["task", "metric", "value", "stderr", "95 % CI", "n"]
CAPTIONS = {"pooled": "pooled groups weigh each task by its size", "macro": "glue is the mean of its tasks' scores"}


def print_results(results: dict[str, dict], title: str, console: Console | None = None) -> None:
    console = console or Console()
    members = {member for values in results.values() for member in values.get("members", [])}
    headline = {name: values for name, values in results.items() if name not in members}
    inner_groups = {name: values for name, values in results.items() if name in members and "members" in values}
    console.print(_rich_table(results_frame(headline), title, _caption(headline)))
    if inner_groups:
        console.print(_rich_table(results_frame(inner_groups), "groups within groups", _caption(inner_groups)))
    for group, tasks in _tasks_by_smallest_group(results).items():
        console.print(_compact(group, {name: results[name] for name in tasks}))


def _tasks_by_smallest_group(results: dict[str, dict]) -> dict[str, list[str]]:
    """Each task that belongs to a group, listed once: under the smallest group holding it (an MMLU subject under
    its category, not again under mmlu)."""
    groups = sorted((name for name, values in results.items() if "members" in values),
                    key=lambda name: len(results[name]["members"]))
    placed: dict[str, list[str]] = {}
    seen: set[str] = set()
    for group in groups:
        for task in results[group]["members"]:
            if task in results and "members" not in results[task] and task not in seen:
                placed.setdefault(group, []).append(task)
                seen.add(task)
    return {group: placed[group] for group in results if group in placed}


def _caption(results: dict[str, dict]) -> str | None:
    kinds = sorted({values.get("aggregation", "pooled") for values in results.values() if "members" in values})
    return "; ".join(CAPTIONS.get(kind, kind) for kind in kinds) or None


def _interval(low, high, digits: int) -> str | None:
    """`[low, high]`, or None where the record has no interval (n < 2, or written before results carried one)."""
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return None
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def _rich_table(frame: pd.DataFrame, title: str, caption: str | None) -> Table:
    table = Table(title=title, caption=caption)
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("task", "metric") else "right",
                         no_wrap=column in ("task", "95 % CI"))
    for row in frame.itertuples(index=False):
        stderr = "n/a" if pd.isna(row.stderr) else f"{row.stderr:.4f}"
        interval = _interval(row.ci95_low, row.ci95_high, 4) or "n/a"
        table.add_row(row.task, row.metric, f"{row.value:.4f}", stderr, interval, str(row.n))
    return table


def _compact(group: str, tasks: dict[str, dict]) -> Columns:
    """Each task of a group as `name value [95 % CI]` (names without the prefix they share), as many to a line as
    the terminal holds. The interval rather than the stderr: at a subject's few questions it is the honest width
    (asymmetric near 0 and 1, never outside them)."""
    frame = results_frame(tasks)
    prefix = os.path.commonprefix(list(tasks)) if len(tasks) > 1 else ""
    prefix = prefix[:prefix.rfind("_") + 1]  # whole words only: mmlu_, not mmlu_high_school_m
    cells = []
    for row in frame.itertuples(index=False):
        interval = _interval(row.ci95_low, row.ci95_high, 2)
        metric = f" {row.metric}" if frame["metric"].nunique() > 1 else ""
        cells.append(f"{row.task.removeprefix(prefix)}{metric} {row.value:.3f}" + (f" {interval}" if interval else ""))
    metrics = ", ".join(frame["metric"].unique())
    return Columns(cells, title=f"{group}: its {len(tasks)} tasks ({prefix}..., {metrics}; value [95 % CI])",
                   padding=(0, 2))
