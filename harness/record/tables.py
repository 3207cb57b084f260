"""The tables of a run record: its results (one row per task or group and metric) and its systems figures (one
row per task and one for the run), as pandas frames. results.csv is the two together; reports/ prints and renders
the same frames."""

from __future__ import annotations

import pandas as pd

RESULT_COLUMNS = ["task", "metric", "value", "stderr", "ci95_low", "ci95_high", "n"]
NOT_METRICS = ("n", "members", "aggregation")  # the other keys of a result: a metric's companions end in these
COMPANIONS = ("_stderr", "_ci95")


def is_metric(key: str) -> bool:
    """Whether a key of a task's or group's result names a metric (not n, members, a stderr or an interval)."""
    return key not in NOT_METRICS and not key.endswith(COMPANIONS)


def results_frame(results: dict[str, dict]) -> pd.DataFrame:
    """One row per task or group and metric, with its stderr and 95 % interval (empty for a record written before
    results carried intervals, or where the interval is undefined)."""
    rows = []
    for task, values in results.items():
        for metric in filter(is_metric, values):
            interval = values.get(metric + "_ci95") or (None, None)
            rows.append({"task": task, "metric": metric, "value": values[metric],
                         "stderr": values.get(metric + "_stderr"), "ci95_low": interval[0],
                         "ci95_high": interval[1], "n": values["n"]})
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


# (header, path in a scope's summary, shown scaled by, format, shown in the printed table)
SYSTEMS_COLUMNS = [
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
    # A record written by another tool (or by hand, as tests do) may lack a scope: its figures are simply absent.
    scopes = {**systems.get("tasks", {}), "run": systems.get("run", {})}
    rows = [{"scope": name, **{column: lookup(scope, path) for column, path, *_ in SYSTEMS_COLUMNS}}
            for name, scope in scopes.items()]
    return pd.DataFrame(rows, columns=["scope"] + [column for column, *_ in SYSTEMS_COLUMNS])


def systems_rows(systems: dict) -> list[dict]:
    """The same figures as rows of results.csv (task, metric, value), metric names prefixed "systems:"."""
    frame = systems_frame(systems)
    rows = []
    for record in frame.to_dict("records"):
        for column, path, *_ in SYSTEMS_COLUMNS:  # named by the summary's path, in its units (seconds, tokens/s)
            rows.append({"task": record["scope"], "metric": "systems:" + ".".join(path), "value": record[column],
                         "stderr": None, "n": None})
    memory = systems["memory"]
    peak = memory.get("peak_rss_bytes")
    rows.append({"task": "run", "metric": "systems:peak RSS bytes", "value": peak if isinstance(peak, int) else None,
                 "stderr": None, "n": None})
    return rows
