"""The tables of `harness report`: what one or more run folders measured, as pandas frames.

quality: every task and group, metric, value, stderr and a 95 % interval.
breakdowns: the tables that tasks declare for themselves (Task.breakdown, kept in the run record's task entry),
  such as "mmlu" (each MMLU subject with its category) and "glue" (each GLUE task). They are built from the record
  alone, so that reports never import a task; a run recorded before tasks declared them has none.
systems: each run's throughput, latency percentiles, batches and memory, per task and for the run.
comparison: one row per run (model, variant, bytes, headline quality, tokens/s, p95 latency, peak memory), for
  comparing models and variants side by side.
failures: the documents a run got wrong (prompt, response, target), for the HTML report's drill-down.

The 95 % interval is the one the run recorded beside each stderr ("<metric>_ci95", harness/stats.py and
docs/statistics.md: Wilson's for a mean of 0/1 scores, Student's t or a bootstrap percentile interval otherwise).
A record written before results carried intervals, or a metric without one (n < 2), leaves it empty: the report
does not rebuild one as value +- 1.96 stderr, which leaves [0, 1] at small n.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.errors import UserError
from harness.record.run_folder import read_run
from harness.record.tables import SYSTEMS_COLUMNS, is_metric, lookup, systems_frame


@dataclass
class Run:
    label: str  # how tables and charts name the run: the model spec, plus the folder where specs repeat
    folder: Path
    record: dict
    samples: list[dict]


def load_runs(folders: list[Path]) -> list[Run]:
    runs = []
    for folder in folders:
        record, samples = read_run(folder)
        if not isinstance(record, dict) or not {"model", "results"} <= set(record):
            raise UserError(f"{folder}/results.json is not a harness run record (no model or results)")
        runs.append(Run(record["model"]["spec"], folder, record, samples))
    specs = [run.label for run in runs]
    for run in runs:
        if specs.count(run.label) > 1:
            run.label = f"{run.label} ({run.folder.name})"
    return runs


def top_level(results: dict) -> list[str]:
    """The tasks and groups that are not members of a group in the same results: the run's headline rows."""
    members = {member for values in results.values() for member in values.get("members", [])}
    return [name for name in results if name not in members]


def metric_names(values: dict) -> list[str]:
    return [key for key in values if is_metric(key)]


def higher_is_better(record: dict, task: str, metric: str) -> bool:
    """From the task's metric description; a group takes its first member's."""
    results = record["results"]
    name = results.get(task, {}).get("members", [task])[0] if task in results else task
    while name in results and "members" in results[name]:
        name = results[name]["members"][0]
    return record.get("tasks", {}).get(name, {}).get("metrics", {}).get(metric, {}).get("higher_is_better", True)


def quality_frame(run: Run) -> pd.DataFrame:
    rows = []
    headline = set(top_level(run.record["results"]))
    for task, values in run.record["results"].items():
        for metric in metric_names(values):
            value, stderr = values[metric], values.get(metric + "_stderr")
            interval = values.get(metric + "_ci95") or (None, None)
            rows.append({"run": run.label, "task": task, "kind": "group" if "members" in values else "task",
                         "headline": task in headline, "metric": metric, "value": value, "stderr": stderr,
                         "ci95_low": interval[0], "ci95_high": interval[1], "n": values["n"],
                         "higher_is_better": higher_is_better(run.record, task, metric)})
    return pd.DataFrame(rows, columns=["run", "task", "kind", "headline", "metric", "value", "stderr", "ci95_low",
                                       "ci95_high", "n", "higher_is_better"])


def breakdowns(run: Run) -> dict[str, dict]:
    """The breakdown tables the run's tasks declared: {table id: {"title", "tasks": {task: its declaration}}}, in
    the order the tasks ran."""
    tables: dict[str, dict] = {}
    for task, description in run.record.get("tasks", {}).items():
        declared = description.get("breakdown")
        if declared:
            table = tables.setdefault(declared["table"], {"title": declared["title"], "tasks": {}})
            table["tasks"][task] = declared
    return tables


def breakdown_frame(quality: pd.DataFrame, table: dict) -> pd.DataFrame:
    """One breakdown table of a run, from its quality_frame: each declared task's rows of the declared metrics,
    with the table's own columns (category, subject, ...) after the task, and rows sorted by them."""
    declared = table["tasks"]
    rows = quality[[task in declared and metric in declared[task]["metrics"]
                    for task, metric in zip(quality["task"], quality["metric"])]].copy()
    columns = list(dict.fromkeys(name for entry in declared.values() for name in entry["columns"]))
    for position, name in enumerate(columns, start=2):
        rows.insert(position, name, [declared[task]["columns"].get(name) for task in rows["task"]])
    rows = rows.drop(columns=["kind", "headline", "higher_is_better"])
    return rows.sort_values(columns, kind="stable") if columns else rows


def run_systems_frame(run: Run) -> pd.DataFrame:
    if "systems" not in run.record:
        return pd.DataFrame()
    frame = systems_frame(run.record["systems"])  # in seconds and tokens/s: shown in the headers' units
    for column, _, scale, *_ in SYSTEMS_COLUMNS:
        frame[column] = pd.to_numeric(frame[column]) * scale
    peak = lookup(run.record["systems"], ("memory", "peak_rss_bytes"))
    frame["peak RSS MiB"] = [None] * (len(frame) - 1) + [peak / 2**20 if peak is not None else None]  # run only
    scopes = [*run.record["systems"].get("tasks", {}).values(), run.record["systems"].get("run", {})]
    if any("speculation" in scope for scope in scopes):  # a speculative run: how much the drafts were worth
        for column, key, scale in SPECULATION_COLUMNS:
            frame[column] = [None if (value := lookup(scope, ("speculation", key))) is None else value * scale
                             for scope in scopes]
    frame.insert(0, "run", run.label)
    return frame


# A speculative run's systems columns (harness/systems/profiler.py, speculation_summary).
SPECULATION_COLUMNS = [("drafts accepted %", "acceptance_rate", 100), ("tokens a target step", "tokens_per_row_step", 1),
                       ("draft time %", "draft_share", 100)]


def decoding_of(model: dict) -> str:
    """How a run decoded, in words: "kv cache", "no kv cache" or "speculative ngram=3,k=4"."""
    decoding = model.get("decoding") or {}
    if decoding.get("speculative"):
        return f"speculative {decoding['speculative']}"
    return "no kv cache" if decoding.get("kv_cache") is False else "kv cache"


def latency_p95(systems: dict) -> float | None:
    """The run's slowest request kind at the 95th percentile, in seconds (None when nothing was timed)."""
    values = [lookup(summary, ("p95",)) for summary in systems.get("run", {}).get("request_latency_s", {}).values()]
    values = [value for value in values if isinstance(value, (int, float))]
    return max(values) if values else None


def comparison_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per run: what it is, its headline quality (the top-level tasks' metrics every run has), and its
    cost. Quality columns are named "task metric"."""
    quality = {run.label: quality_frame(run) for run in runs}
    shared = None
    for frame in quality.values():
        pairs = [(t, m) for t, m in frame.loc[frame["headline"], ["task", "metric"]].itertuples(index=False)]
        shared = pairs if shared is None else [pair for pair in shared if pair in pairs]
    rows = []
    for run in runs:
        model, systems = run.record["model"], run.record.get("systems", {})
        values = quality[run.label].set_index(["task", "metric"])["value"]
        row = {"run": run.label, "model": model["spec"], "folder": str(run.folder),
               "variant": model.get("variant", {}).get("name", ""), "lora": "lora" in model,
               "decoding": decoding_of(model),
               "parameters": model.get("parameters"), "bytes": model.get("bytes")}
        row.update({f"{task} {metric}": values[(task, metric)] for task, metric in shared or []})
        row.update({
            "prefill tok/s": lookup(systems, ("run", "prefill", "tokens_per_s")),
            "decode tok/s": lookup(systems, ("run", "decode", "tokens_per_s")),
            "latency p95 s": latency_p95(systems),
            "peak RSS bytes": lookup(systems, ("memory", "peak_rss_bytes")),
            "wall s": run.record.get("wall_seconds"),
        })
        rows.append(row)
    # Speed against the first run's (plain decoding, when the runs compare ways of decoding the same model).
    for column, ratio in (("decode tok/s", "decode tok/s vs first"), ("latency p95 s", "latency p95 vs first")):
        first = rows[0][column]
        for row in rows:
            row[ratio] = row[column] / first if row[column] is not None and first else None
    return pd.DataFrame(rows)


def primary_binary_metric(run: Run, task: str) -> str | None:
    """The first metric of a task whose per-sample scores are right (1) or wrong (0): what "failed" means."""
    for metric, description in run.record.get("tasks", {}).get(task, {}).get("metrics", {}).items():
        if description.get("aggregation", "mean") == "mean" and description.get("higher_is_better", True):
            values = [s["scores"].get(metric) for s in run.samples if s["task"] == task]
            if values and all(v in (0, 1, True, False) for v in values):
                return metric
    return None


def show(value) -> str:
    """A prompt, response or target as text: strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, dict) and "logprob" in v for v in value):
        logprobs = [v["logprob"] for v in value]  # a multiple-choice response: one loglikelihood per choice
        best = max(range(len(logprobs)), key=logprobs.__getitem__)
        return f"choice {best} is the most likely; loglikelihoods " + ", ".join(f"{lp:.3f}" for lp in logprobs)
    return json.dumps(value, ensure_ascii=False)


def failures(run: Run, most: int) -> list[dict]:
    """Per task with a right/wrong metric: {"task", "metric", "failed", "total", "shown": [samples]}, at most
    `most` samples shown per task (a full MMLU run has thousands of failures; the HTML file stays small)."""
    by_task = []
    for task in run.record.get("tasks", {}):
        metric = primary_binary_metric(run, task)
        if metric is None:
            continue
        samples = [s for s in run.samples if s["task"] == task]
        failed = [s for s in samples if not s["scores"][metric]]
        shown = [{"doc_id": s["doc_id"], "prompt": show(s.get("prompt", "")), "response": show(s.get("response", "")),
                  "target": show(s.get("target", "")), "outcome": program_outcomes(s["scores"])}
                 for s in failed[:most]]
        by_task.append({"task": task, "metric": metric, "failed": len(failed), "total": len(samples), "shown": shown,
                        "has_outcomes": any(sample["outcome"] for sample in shown)})
    return by_task


def program_outcomes(scores: dict) -> str:
    """For a code task, how each program ended and what it printed. The printing is the program's, untrusted: it
    is shown as text under a label that says so (the template escapes it, as every value)."""
    lines = []
    for number, result in enumerate(scores.get("results") or [], start=1):
        lines.append(f"program {number}: {result.get('status')}"
                     + (f" ({result['error_type']})" if result.get("error_type") else ""))
        for stream in ("stdout", "stderr"):
            text = result.get(f"untrusted_{stream}")
            if text:
                lines.append(f"  {stream}, written by the program (untrusted):\n{text}")
    return "\n".join(lines)
