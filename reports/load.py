"""Load runs (`harness load`) in a report: their points as one table, and latency and throughput against the
offered load as charts, one line per load run, so that two servers, or one server with and without batching, are
read off the same axes.

The offered load is the requested rate for open-loop points and the number of clients for closed-loop ones; the
two are charted apart. A point where the sender did not keep its schedule is marked in the table: its latencies
describe a lighter load than the one asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.record.load_folder import read_load
from reports.charts import curves_svg


@dataclass
class LoadRun:
    label: str  # the folder's name (several load runs of one model differ by their server, not their model)
    folder: Path
    record: dict


def load_load_runs(folders: list[Path]) -> list[LoadRun]:
    runs = [LoadRun(Path(folder).name, Path(folder), read_load(folder)) for folder in folders]
    names = [run.label for run in runs]
    for run in runs:
        if names.count(run.label) > 1:
            run.label = str(run.folder)
    return runs


# (column in the report, figure in the record, scale): latencies in milliseconds, as people quote them.
COLUMNS = [("requested rate", "requested_rate", 1), ("concurrency", "concurrency", 1),
           ("completed", "completed", 1), ("failed", "failed", 1), ("req/s", "request_throughput", 1),
           ("output tok/s", "output_token_throughput", 1), ("TTFT p50 ms", "ttft_p50_s", 1000),
           ("TTFT p99 ms", "ttft_p99_s", 1000), ("TPOT p50 ms", "tpot_p50_s", 1000),
           ("TPOT p99 ms", "tpot_p99_s", 1000), ("e2e p99 s", "e2e_p99_s", 1), ("SLO met", "slo_attainment", 1),
           ("goodput req/s", "goodput", 1), ("sent rate", "sent_rate", 1), ("kept schedule", "kept_schedule", 1)]


def scaled(value, scale):
    return value * scale if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def load_frame(runs: list[LoadRun]) -> pd.DataFrame:
    rows = []
    for run in runs:
        for point in sorted(run.record["points"], key=offered):
            rows.append({"run": run.label, "model": run.record.get("model"), "SLO": run.record.get("slo"),
                         **{column: scaled(point.get(figure), scale) for column, figure, scale in COLUMNS}})
    return pd.DataFrame(rows)


def offered(point: dict) -> tuple[int, float]:
    """Open-loop points by rate, then closed-loop ones by clients."""
    if point.get("requested_rate") is not None:
        return 0, point["requested_rate"]
    return 1, point.get("concurrency") or 0


def curve_points(points: dict[str, list[dict]], x: str, y: str, scale: float, suffix: str) -> dict:
    """{run label + suffix: [(its x, its y scaled)]} for the chart's lines."""
    return {f"{label}{suffix}": [(p[x], scaled(p.get(y), scale)) for p in chosen] for label, chosen in points.items()}


def load_charts(runs: list[LoadRun]) -> list[dict]:
    """For open-loop points (against the requested rate) and closed-loop ones (against the clients), where any run
    has them: TTFT p50 and p99, end-to-end p99, and output tokens/s with requests/s."""
    charts = []
    for kind, figure, x_name in ((0, "requested_rate", "requested rate (req/s)"),
                                 (1, "concurrency", "concurrent clients")):
        points = {run.label: [p for p in run.record["points"] if offered(p)[0] == kind] for run in runs}
        points = {label: chosen for label, chosen in points.items() if chosen}
        if not points:
            continue
        against = "rate" if kind == 0 else "concurrency"
        ttft = {**curve_points(points, figure, "ttft_p99_s", 1000, " p99"),
                **curve_points(points, figure, "ttft_p50_s", 1000, " p50")}
        charts += [
            {"title": f"Time to first token against {against}",
             "svg": curves_svg(ttft, x_name, "TTFT (ms)", log_y=True)},
            {"title": f"End-to-end latency (p99) against {against}",
             "svg": curves_svg(curve_points(points, figure, "e2e_p99_s", 1, ""), x_name, "e2e p99 (s)")},
            {"title": f"Output tokens/s against {against}",
             "svg": curves_svg(curve_points(points, figure, "output_token_throughput", 1, ""), x_name,
                               "output tok/s")},
            {"title": f"Completed requests/s against {against}",
             "svg": curves_svg(curve_points(points, figure, "request_throughput", 1, ""), x_name, "req/s")}]
    return charts
