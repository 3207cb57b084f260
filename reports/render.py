"""Writes `harness report`'s tables (reports/report.py) as CSV files, one Markdown file and one HTML file.

The HTML page is self-contained so that it can be mailed, archived as a CI artifact and opened offline: the
styles, the sorting script and the charts (inline SVG) are all in the file, and it loads nothing. Jinja2 renders
it from reports/templates/report.html.j2, escaping every value (prompts and responses are untrusted text).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import jinja2
import pandas as pd

from reports import report
from reports.charts import frontier_svg

FORMATS = ("csv", "md", "html")
TEMPLATES = Path(__file__).parent / "templates"


def build(runs: list[report.Run], most_failures: int) -> dict:
    """Every table and chart of the report, as frames (and SVG strings), before any rendering, with each table's
    title: quality, then the breakdown tables the runs' tasks declared (in the order their first task ran), then
    systems, and for several runs the comparison."""
    quality = [report.quality_frame(run) for run in runs]
    declared = [report.breakdowns(run) for run in runs]
    titles = dict(TITLES)
    for of_run in declared:
        for name, table in of_run.items():
            titles.setdefault(name, table["title"])  # a table id the report names itself keeps its own title
    tables = {"quality": pd.concat(quality, ignore_index=True)}
    for name in dict.fromkeys(name for of_run in declared for name in of_run if name not in FIXED_TABLES):
        tables[name] = pd.concat([report.breakdown_frame(frame, of_run[name])
                                  for frame, of_run in zip(quality, declared) if name in of_run], ignore_index=True)
    tables["systems"] = pd.concat([report.run_systems_frame(run) for run in runs], ignore_index=True)
    charts = []
    if len(runs) > 1:
        comparison = report.comparison_frame(runs)
        tables["comparison"] = comparison
        charts = comparison_charts(runs, comparison)
    return {"tables": {name: frame for name, frame in tables.items() if not frame.empty}, "charts": charts,
            "titles": titles, "failures": {run.label: report.failures(run, most_failures) for run in runs}}


def comparison_charts(runs: list[report.Run], comparison: pd.DataFrame) -> list[dict]:
    """For each task's first headline metric, quality against model size and against tokens/s."""
    charted, quality_columns = set(), []
    for column in comparison.columns:
        if column not in COMPARISON_FIXED and column.split(" ", 1)[0] not in charted:
            charted.add(column.split(" ", 1)[0])
            quality_columns.append(column)
    costs = [("model MiB", [None if b is None else b / 2**20 for b in to_floats(comparison["bytes"])], True)]
    for column in ("decode tok/s", "prefill tok/s"):  # decode speed when the runs generated, else prefill
        if comparison[column].notna().all():
            costs.append((column, to_floats(comparison[column]), False))
            break
    charts = []
    for quality in quality_columns:
        task, metric = quality.split(" ", 1)
        higher = report.higher_is_better(runs[0].record, task, metric)
        for name, values, lower_is_better in costs:
            charts.append({"title": f"{quality} against {name}",
                           "svg": frontier_svg(list(comparison["run"]), values, to_floats(comparison[quality]),
                                               name, quality, lower_is_better, higher)})
    return charts


COMPARISON_FIXED = {"run", "model", "folder", "variant", "lora", "parameters", "bytes", "prefill tok/s",
                    "decode tok/s", "latency p95 s", "peak RSS bytes", "wall s"}


def to_floats(column: pd.Series) -> list[float | None]:
    return [None if value is None or pd.isna(value) else float(value) for value in column]


def display(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.4e}"
    return str(value)


def sort_key(value) -> str | None:
    """A number as JavaScript's parseFloat reads it, for the table sorter; None for anything else."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or pd.isna(value):
        return None
    return "Infinity" if value == math.inf else "-Infinity" if value == -math.inf else repr(float(value))


def html_table(frame: pd.DataFrame) -> dict:
    """Columns and rows of {"text": shown, "key": sort key}: numbers sort by value, everything else by text."""
    rows = [[{"text": display(value), "key": sort_key(value)} for value in record]
            for record in frame.itertuples(index=False)]
    return {"columns": list(frame.columns), "rows": rows}


def write(runs: list[report.Run], formats: list[str], output: Path, most_failures: int = 50) -> list[Path]:
    output.mkdir(parents=True, exist_ok=True)
    content = build(runs, most_failures)
    written = []
    if "csv" in formats:
        for name, frame in content["tables"].items():
            path = output / f"{name}.csv"
            frame.to_csv(path, index=False)
            written.append(path)
    if "md" in formats:
        path = output / "report.md"
        parts = [f"# Report: {', '.join(run.label for run in runs)}\n"]
        for name, frame in content["tables"].items():
            shown = frame.astype(object).where(frame.notna(), None)  # missing values as "—", not "nan"
            parts.append(f"## {content['titles'][name]}\n\n"
                         f"{shown.to_markdown(index=False, floatfmt='.6g', missingval='—')}\n")
        path.write_text("\n".join(parts), encoding="utf-8")
        written.append(path)
    if "html" in formats:
        path = output / "report.html"
        path.write_text(render_html(runs, content), encoding="utf-8")
        written.append(path)
    return written


# The tables the report makes itself; the tasks' breakdown tables bring their own titles (Task.breakdown).
TITLES = {"comparison": "Runs side by side", "quality": "Quality: every task and metric (95 % interval)",
          "systems": "Systems: throughput, latency and batches"}
FIXED_TABLES = set(TITLES)


def templates() -> jinja2.Environment:
    """reports/templates, every value escaped unless marked safe (the charts' SVG)."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined)


def render_html(runs: list[report.Run], content: dict) -> str:
    breakdown_tables = [name for name in content["tables"] if name not in FIXED_TABLES]
    order = ["comparison", "quality", *breakdown_tables, "systems"]
    tables = [{"id": name, "title": content["titles"][name], **html_table(content["tables"][name])}
              for name in order if name in content["tables"]]
    settings = [{"label": run.label, "folder": str(run.folder), "command": run.record.get("command", ""),
                 "created": run.record.get("created", ""),
                 "record": json.dumps({key: run.record.get(key) for key in SETTINGS_SHOWN if key in run.record},
                                      indent=2, ensure_ascii=False)}
                for run in runs]
    return templates().get_template("report.html.j2").render(
        title="Report: " + ", ".join(run.label for run in runs), tables=tables, charts=content["charts"],
        failures=content["failures"], settings=settings,
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"))


SETTINGS_SHOWN = ("harness_version", "command", "model", "settings", "tasks", "environment", "wall_seconds")
