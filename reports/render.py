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

from reports import comparison, report, robustness
from reports.charts import bars_svg, frontier_svg
from reports.load import LoadRun, load_charts, load_frame

FORMATS = ("csv", "md", "html")
TEMPLATES = Path(__file__).parent / "templates"


def build(runs: list[report.Run], most_failures: int,
          comparisons: list[tuple[str, str, list[dict]]] | None = None, load_runs: list[LoadRun] = ()) -> dict:
    """Every table and chart of the report, as frames (and SVG strings), before any rendering, with each table's
    title, in the order the report shows them. For several runs, the paired comparison of each with the first
    (reports/comparison.py) and the runs side by side open it: the headline before the detail. Then quality, the
    breakdown tables the runs' tasks declared (in the order their first task ran), and systems; load runs
    (reports/load.py) last, with their charts."""
    quality = [report.quality_frame(run) for run in runs]
    declared = [report.breakdowns(run) for run in runs]
    titles = dict(TITLES)
    for of_run in declared:
        for name, table in of_run.items():
            titles.setdefault(name, table["title"])  # a table id the report names itself keeps its own title
    tables, charts = {}, []
    if comparisons:
        tables["comparison"] = comparison.comparison_frame(comparisons)
        titles["comparison"] = f"Compared with {comparisons[0][0]}: headline metrics first, paired by document"
    if len(runs) > 1:
        side_by_side = report.comparison_frame(runs)
        tables["side_by_side"] = side_by_side
        charts = comparison_charts(runs, side_by_side)
    tables["quality"] = pd.concat(quality, ignore_index=True) if quality else pd.DataFrame()
    for name in dict.fromkeys(name for of_run in declared for name in of_run if name not in FIXED_TABLES):
        tables[name] = pd.concat([report.breakdown_frame(frame, of_run[name])
                                  for frame, of_run in zip(quality, declared) if name in of_run], ignore_index=True)
    first_declared = {}  # each breakdown table as the first run that asks for a chart declares it
    for of_run, run in zip(declared, runs):
        for name, table in of_run.items():
            if chart_of(table):
                first_declared.setdefault(name, (table, run.record))
    breakdown_charts = {name: breakdown_chart(tables[name], *first_declared[name]) for name in tables
                        if name in first_declared}
    robustness_rows = [(run.label, run.record.get("robustness") or []) for run in runs]
    tables.update(robustness.report_frames(robustness_rows))
    breakdown_charts.update(robustness_chart(robustness_rows))
    tables["systems"] = pd.concat([report.run_systems_frame(run) for run in runs], ignore_index=True) if runs \
        else pd.DataFrame()
    tables["load"] = load_frame(load_runs) if load_runs else pd.DataFrame()
    return {"tables": {name: frame for name, frame in tables.items() if not frame.empty}, "charts": charts,
            "breakdown_charts": breakdown_charts,
            "load_charts": load_charts(load_runs) if load_runs else [],
            "titles": titles, "failures": {run.label: report.failures(run, most_failures) for run in runs}}


def chart_of(table: dict) -> str | None:
    """The metric a breakdown table asks to be drawn (its tasks' declared "chart"), or None."""
    return next((entry["chart"] for entry in table["tasks"].values() if entry.get("chart")), None)


def breakdown_chart(frame: pd.DataFrame, table: dict, record: dict) -> dict:
    """A breakdown's declared metric as bars by the table's first column, one bar per run, with its interval."""
    metric = chart_of(table)
    column = next(iter(next(iter(table["tasks"].values()))["columns"]))
    rows = frame[frame["metric"] == metric]
    categories = list(dict.fromkeys(rows[column]))
    series = {}
    for run, of_run in rows.groupby("run", sort=False):
        by_category = {row[column]: (row["value"], row["ci95_low"], row["ci95_high"]) for _, row in of_run.iterrows()}
        series[run] = [tuple(None if pd.isna(x) else float(x) for x in by_category.get(c, (None,) * 3))
                       for c in categories]
    task = next(iter(table["tasks"]))
    return {"title": f"{table['title']}: {metric}",
            "svg": bars_svg(categories, series, metric, report.higher_is_better(record, task, metric))}


def robustness_chart(runs: list[tuple[str, list[dict]]]) -> dict[str, dict]:
    """Clean against perturbed as bars, for the first run that has robustness rows (a second run's are in the
    table); higher or lower is better as the first row's metric says."""
    for label, rows in runs:
        if rows:
            categories, series = robustness.chart_series(rows)
            metric = rows[0]["metric"]
            return {"robustness": {"title": f"{label}: {metric}, clean and perturbed",
                                   "svg": bars_svg(categories, series, metric, rows[0]["higher_is_better"])}}
    return {}


def comparison_charts(runs: list[report.Run], side_by_side: pd.DataFrame) -> list[dict]:
    """For each task's first headline metric, quality against model size and against tokens/s."""
    charted, quality_columns = set(), []
    for column in side_by_side.columns:
        if column not in COMPARISON_FIXED and column.split(" ", 1)[0] not in charted:
            charted.add(column.split(" ", 1)[0])
            quality_columns.append(column)
    costs = [("model MiB", [None if b is None else b / 2**20 for b in to_floats(side_by_side["bytes"])], True)]
    for column in ("decode tok/s", "prefill tok/s"):  # decode speed when the runs generated, else prefill
        if side_by_side[column].notna().all():
            costs.append((column, to_floats(side_by_side[column]), False))
            break
    charts = []
    for quality in quality_columns:
        task, metric = quality.split(" ", 1)
        higher = report.higher_is_better(runs[0].record, task, metric)
        for name, values, lower_is_better in costs:
            charts.append({"title": f"{quality} against {name}",
                           "svg": frontier_svg(list(side_by_side["run"]), values, to_floats(side_by_side[quality]),
                                               name, quality, lower_is_better, higher)})
    return charts


COMPARISON_FIXED = {"run", "model", "folder", "variant", "lora", "decoding", "parameters", "bytes", "prefill tok/s",
                    "decode tok/s", "latency p95 s", "peak RSS bytes", "wall s", "decode tok/s vs first",
                    "latency p95 vs first"}


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
    """Columns and rows of {"text": shown, "key": sort key, "class": None}: numbers sort by value, everything else
    by text."""
    rows = [[{"text": display(value), "key": sort_key(value), "class": None} for value in record]
            for record in frame.itertuples(index=False)]
    return {"columns": list(frame.columns), "rows": rows}


def comparison_html_table(frame: pd.DataFrame) -> dict:
    """The comparison as html_table gives a table, its numbers shown as reports/comparison.py formats them but
    sorted by their raw values, and each verdict cell classed by its verdict (report.html.j2 colours it)."""
    raw = frame.astype(object).where(frame.notna(), None)
    shown = comparison.shown_frame(frame)
    rows = [[{"text": text[column],
              "key": sort_key(values[comparison.SORTED_BY[column]]) if column in comparison.SORTED_BY else None,
              "class": comparison.VERDICT_CLASSES.get(values["verdict"]) if column == "verdict" else None}
             for column in comparison.SHOWN]
            for (_, values), (_, text) in zip(raw.iterrows(), shown.iterrows())]
    return {"columns": list(comparison.SHOWN), "rows": rows}


def write(runs: list[report.Run], formats: list[str], output: Path, most_failures: int = 50,
          comparisons: list[tuple[str, str, list[dict]]] | None = None, load_runs: list[LoadRun] = ()
          ) -> list[Path]:
    """The report's files. comparisons: (reference label, run label, rows of harness.gate.compare) for each run
    after the first, computed by the caller (reports never import the gate); none for a single run. load_runs:
    `harness load` folders, reported after the evaluation runs."""
    output.mkdir(parents=True, exist_ok=True)
    content = build(runs, most_failures, comparisons, load_runs)
    title = "Report: " + ", ".join([run.label for run in runs] + [run.label for run in load_runs])
    written = []
    if "csv" in formats:
        for name, frame in content["tables"].items():
            path = output / f"{name}.csv"
            frame.to_csv(path, index=False)
            written.append(path)
    if "md" in formats:
        path = output / "report.md"
        parts = [f"# {title}\n"]
        for name, frame in content["tables"].items():
            parts.append(f"## {content['titles'][name]}\n\n" + (f"{NOTES[name]}\n\n" if name in NOTES else "")
                         + markdown_table(name, frame) + "\n")
        path.write_text("\n".join(parts), encoding="utf-8")
        written.append(path)
    if "html" in formats:
        path = output / "report.html"
        path.write_text(render_html(runs, load_runs, content, title), encoding="utf-8")
        written.append(path)
    return written


def markdown_table(name: str, frame: pd.DataFrame) -> str:
    if name == "comparison":  # already text; tabulate would otherwise re-read "0.6" as a number and reformat it
        return comparison.shown_frame(frame).to_markdown(index=False, disable_numparse=True)
    shown = frame.astype(object).where(frame.notna(), None)  # missing values as "—", not "nan"
    return shown.to_markdown(index=False, floatfmt=".6g", missingval="—")


# The tables the report makes itself; the tasks' breakdown tables bring their own titles (Task.breakdown). The
# comparison's title names the reference run (build).
TITLES = {"comparison": "Compared with the first run", "side_by_side": "Runs side by side",
          "quality": "Quality: every task and metric (95 % interval)",
          "systems": "Systems: throughput, latency and batches",
          "robustness": "Robustness: clean against perturbed, paired by document",
          "robustness_orders": "Robustness: accuracy under each order of the choices (rotated by k; 0 is the clean "
                               "order)",
          "robustness_letters": "Robustness: position bias, the letters chosen against the gold letters",
          "robustness_layouts": "Robustness: accuracy in each prompt layout",
          "load": "Serving under load (harness load): each point's throughput, latency and SLO attainment"}
FIXED_TABLES = set(TITLES)
# What a reader needs to read a table, under its title in report.md and report.html.
NOTES = {"robustness": "Each task asked again under a perturbation that leaves its answers the same (harness run "
                       "--perturb, docs/robustness.md). The difference is perturbed minus clean on the same "
                       "documents, with its 95 % interval and p (McNemar's mid-p for right/wrong scores, the paired "
                       "bootstrap otherwise); consistency is the share of questions whose chosen answer is the same "
                       "under every order of the choices; the position-bias p is Hotelling's T^2 test of the letters "
                       "chosen against the gold letters; the layout spread is the best layout's score minus the "
                       "worst's, and the layouts-differ p Cochran's Q test (Friedman's for scores other than "
                       "right/wrong) of all layouts on the same questions.",
         "robustness_letters": "Under the rotations every choice stands once at every letter, so the gold share is "
                               "1/n per letter and a model that chose by content alone would choose each letter as "
                               "often; the clean-order columns are the task's own order.",
         "comparison": "Each run against the first, paired by document (harness/gate/compare.py): primary rows (a "
                       "task's first metric, a pooled group) first, then secondary ones (other metrics, a group's "
                       "members). The difference is run minus reference with its 95 % interval; p is adjusted "
                       "(Holm) within each role; MDE is the smallest change the comparison could have seen at "
                       "80 % power (none: no change was detectable)."}


def templates() -> jinja2.Environment:
    """reports/templates, every value escaped unless marked safe (the charts' SVG)."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined)


def render_html(runs: list[report.Run], load_runs: list[LoadRun], content: dict, title: str) -> str:
    tables = [{"id": name, "title": content["titles"][name], "note": NOTES.get(name),
               **(comparison_html_table(frame) if name == "comparison" else html_table(frame))}
              for name, frame in content["tables"].items()]  # in build's order
    settings = [{"label": run.label, "folder": str(run.folder), "command": run.record.get("command", ""),
                 "created": run.record.get("created", ""),
                 "record": json.dumps({key: run.record.get(key) for key in SETTINGS_SHOWN if key in run.record},
                                      indent=2, ensure_ascii=False)}
                for run in runs]
    settings += [{"label": run.label, "folder": str(run.folder),
                  "command": f"harness load --url {run.record.get('url')}",
                  "created": run.record.get("created", ""),
                  "record": json.dumps({key: value for key, value in run.record.items() if key not in ("points", "files")},
                                       indent=2, ensure_ascii=False)}
                 for run in load_runs]
    return templates().get_template("report.html.j2").render(
        title=title, tables=tables, charts=content["charts"], load_charts=content["load_charts"],
        breakdown_charts=content["breakdown_charts"],
        failures=content["failures"], settings=settings,
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"))


SETTINGS_SHOWN = ("harness_version", "command", "model", "settings", "tasks", "environment", "wall_seconds")
