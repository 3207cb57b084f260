"""The results table: one row per task (or group) and metric."""

from __future__ import annotations

import pandas as pd

from harness.record.tables import RESULT_COLUMNS as COLUMNS
from harness.record.tables import results_frame

def print_results(results: dict[str, dict], title: str) -> None:
    """Prints the tasks, then the groups (as lm-eval does), so the headline numbers end up last on screen."""
    from rich.console import Console

    console = Console()
    tasks = {name: values for name, values in results.items() if "members" not in values}
    groups = {name: values for name, values in results.items() if "members" in values}
    console.print(_rich_table(results_frame(tasks), title))
    if groups:
        kinds = {values.get("aggregation", "pooled") for values in groups.values()}
        captions = {"pooled": "pooled groups weigh each task by its size",
                    "macro": "glue is the mean of its tasks' scores"}
        title = "groups (" + "; ".join(captions[k] for k in sorted(kinds)) + ")"
        console.print(_rich_table(results_frame(groups), title))


def _rich_table(frame: pd.DataFrame, title: str):
    from rich.table import Table

    table = Table(title=title)
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("task", "metric") else "right")
    for row in frame.itertuples(index=False):
        stderr = "n/a" if pd.isna(row.stderr) else f"{row.stderr:.4f}"
        table.add_row(row.task, row.metric, f"{row.value:.4f}", stderr, str(row.n))
    return table
