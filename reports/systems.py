"""The systems table: what each task of a run cost (throughput, latency percentiles, batches) and the run's memory
and energy, from the profiler's summary (harness/systems/profiler.py). A value the hardware could not give reads "n/a"."""

from __future__ import annotations

import pandas as pd
from rich.console import Console
from rich.table import Table

from harness.record.tables import SYSTEMS_COLUMNS as COLUMNS
from harness.record.tables import systems_frame

# Past this many tasks the per-task rows are left to results.csv: the run's row is what a reader looks for first.
MAX_PRINTED_TASKS = 12


def print_systems(systems: dict, hardware: str) -> None:
    frame = systems_frame(systems)
    tasks = len(frame) - 1
    if tasks > MAX_PRINTED_TASKS:
        frame = frame[frame["scope"] == "run"]
    peak = systems["memory"].get("peak_rss_bytes")
    memory = f"peak RSS {peak / 2**20:.0f} MiB" if isinstance(peak, int) else "peak RSS n/a"
    table = Table(title=f"systems ({hardware}; {memory})")
    if tasks > MAX_PRINTED_TASKS:
        table.caption = f"the run as a whole; each of its {tasks} tasks: results.csv (systems:* rows)"
    shown = [(column, scale, fmt) for column, _, scale, fmt, printed in COLUMNS if printed]
    table.add_column("task", justify="left", no_wrap=True)
    for column, _, _ in shown:
        table.add_column(column, justify="right")
    for record in frame.to_dict("records"):
        cells = ["n/a" if record[column] is None or pd.isna(record[column]) else fmt.format(record[column] * scale)
                 for column, scale, fmt in shown]
        table.add_row(record["scope"], *cells)
    Console().print(table)


def print_sweep(rows: list[dict], title: str) -> None:
    """`harness profile`'s table: one row per batch size and prompt length, medians with their spread."""
    def cell(row: dict, metric: str, scale: float, fmt: str) -> str:
        if row.get(metric) is None:
            return "n/a"
        return (f"{fmt.format(row[metric] * scale)} [{fmt.format(row[metric + '_min'] * scale)}-"
                f"{fmt.format(row[metric + '_max'] * scale)}]")

    table = Table(title=title)
    for column in ("batch", "prompt", "prefill tok/s", "decode tok/s", "TTFT ms", "ITL p50 ms", "of FLOP limit"):
        table.add_column(column, justify="right")
    for row in rows:
        fraction = row.get("fraction_of_matmul_limit")
        table.add_row(str(row["batch_size"]), str(row["prompt_length"]),
                      cell(row, "prefill_tokens_per_s", 1, "{:.0f}"), cell(row, "decode_tokens_per_s", 1, "{:.1f}"),
                      cell(row, "ttft_s", 1e3, "{:.0f}"), cell(row, "itl_p50_s", 1e3, "{:.1f}"),
                      "n/a" if fraction is None else f"{100 * fraction:.0f} %")
    Console().print(table)
