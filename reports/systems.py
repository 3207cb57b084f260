"""The systems table: what each task of a run cost (throughput, latency percentiles, batches) and the run's memory
and energy, from the profiler's summary (harness/profiler.py). A value the hardware could not give reads "n/a"."""

from __future__ import annotations

import pandas as pd

# (header, path in a scope's summary, shown scaled by, format, shown in the printed table)
COLUMNS = [
    ("prefill tok/s", ("prefill", "tokens_per_s"), 1, "{:.0f}", True),
    ("decode tok/s", ("decode", "tokens_per_s"), 1, "{:.1f}", True),
    ("TTFT p50 ms", ("ttft_s", "p50"), 1e3, "{:.0f}", True),
    ("TTFT p95 ms", ("ttft_s", "p95"), 1e3, "{:.0f}", True),
    ("ITL p50 ms", ("inter_token_latency_s", "p50"), 1e3, "{:.1f}", True),
    ("ITL p95 ms", ("inter_token_latency_s", "p95"), 1e3, "{:.1f}", True),
    ("batches", ("batches", "count"), 1, "{:.0f}", False),
    ("mean batch", ("batches", "size_mean"), 1, "{:.1f}", False),
    ("wall s", ("wall_s",), 1, "{:.1f}", True),
    ("energy J", ("energy_j",), 1, "{:.1f}", False),
]


def lookup(scope: dict, path: tuple[str, ...]):
    value = scope
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, dict):  # not_available(reason), or an empty percentile summary
        return None
    return value


def systems_frame(systems: dict) -> pd.DataFrame:
    """One row per task and one for the run; numbers as measured (seconds, tokens/s), None where not available."""
    scopes = {**systems["tasks"], "run": systems["run"]}
    rows = [{"scope": name, **{column: lookup(scope, path) for column, path, *_ in COLUMNS}}
            for name, scope in scopes.items()]
    return pd.DataFrame(rows, columns=["scope"] + [column for column, *_ in COLUMNS])


def systems_rows(systems: dict) -> list[dict]:
    """The same figures as rows of results.csv (task, metric, value), metric names prefixed "systems:"."""
    frame = systems_frame(systems)
    rows = []
    for record in frame.to_dict("records"):
        for column, path, *_ in COLUMNS:  # named by the summary's path, in its units (seconds, tokens/s)
            rows.append({"task": record["scope"], "metric": "systems:" + ".".join(path), "value": record[column],
                         "stderr": None, "n": None})
    memory = systems["memory"]
    peak = memory.get("peak_rss_bytes")
    rows.append({"task": "run", "metric": "systems:peak RSS bytes", "value": peak if isinstance(peak, int) else None,
                 "stderr": None, "n": None})
    return rows


def print_systems(systems: dict, hardware: str) -> None:
    from rich.console import Console
    from rich.table import Table

    frame = systems_frame(systems)
    peak = systems["memory"].get("peak_rss_bytes")
    memory = f"peak RSS {peak / 2**20:.0f} MiB" if isinstance(peak, int) else "peak RSS n/a"
    table = Table(title=f"systems ({hardware}; {memory})")
    shown = [(column, scale, fmt) for column, _, scale, fmt, printed in COLUMNS if printed]
    table.add_column("task", justify="left")
    for column, _, _ in shown:
        table.add_column(column, justify="right")
    for record in frame.to_dict("records"):
        cells = ["n/a" if record[column] is None or pd.isna(record[column]) else fmt.format(record[column] * scale)
                 for column, scale, fmt in shown]
        table.add_row(record["scope"], *cells)
    Console().print(table)


def print_sweep(rows: list[dict], title: str) -> None:
    """`harness profile`'s table: one row per batch size and prompt length, medians with their spread."""
    from rich.console import Console
    from rich.table import Table

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
