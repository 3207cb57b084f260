"""Leaderboards: models x tasks tables from the results store, written as CSV, Markdown and HTML.

Each column is a task's headline metric. Its cells must be comparable, so a column takes one identity, the task
version, prompt hash, few-shot count and number of documents (a --limit run scores the first n) of the newest
recorded run of that task, and each model's cell is the newest run of that model with exactly that identity (older
prompt formats and other limits drop out rather than mix in). The headers say n. A cell
shows the value and its stderr; the CSV also names the run folder each cell came from.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.record.store import ResultsStore
from reports.render import sort_key, templates

# Suites: the task (or group) and metric of each column.
SUITES = {
    "default": [("mmlu", "acc"), ("gsm8k", "exact_match,strict-match"), ("truthfulqa_mc2", "acc"),
                ("glue", "score"), ("humaneval", "pass@1"), ("wikitext", "word_perplexity"), ("mt_bench", "score")],
    "nightly": [("mmlu", "acc"), ("wikitext", "word_perplexity"), ("gsm8k", "exact_match,flexible-extract")],
}


def newest_identity(store: ResultsStore, task: str, metric: str) -> tuple | None:
    return store.connection.execute(
        "SELECT results.task_version, results.prompt_hash, results.num_fewshot, results.n FROM results "
        "JOIN runs ON runs.id = results.run_id WHERE results.task = ? AND results.metric = ? "
        "ORDER BY runs.created DESC, runs.id DESC LIMIT 1", (task, metric)).fetchone()


def leaderboard_frame(store: ResultsStore, suite: str) -> pd.DataFrame:
    """One row per model; for each column, value, stderr and source folder (None where the model has no
    comparable run)."""
    models = sorted({run["model_spec"] for run in store.runs()})
    rows = {model: {"model": model} for model in models}
    documents = {}
    for task, metric in SUITES[suite]:
        identity = newest_identity(store, task, metric)
        documents[f"{task} {metric}"] = identity[3] if identity else None
        for model in models:
            cell = store.latest(model, task, metric, *identity) if identity else None
            rows[model][f"{task} {metric}"] = cell["value"] if cell else None
            rows[model][f"{task} {metric} stderr"] = cell["stderr"] if cell else None
            rows[model][f"{task} {metric} run"] = cell["folder"] if cell else None
    frame = pd.DataFrame(list(rows.values()))
    frame.attrs["n"] = documents  # each column's number of documents
    return frame


def render(frame: pd.DataFrame, suite: str, output: Path) -> list[Path]:
    """Writes leaderboard-SUITE.{csv,md,html} into `output`; returns their paths."""
    output.mkdir(parents=True, exist_ok=True)
    columns = [f"{task} {metric}" for task, metric in SUITES[suite]]
    documents = frame.attrs.get("n", {})
    headers = [column + (f" (n={documents[column]})" if documents.get(column) else "") for column in columns]
    shown = pd.DataFrame({"model": frame["model"]})
    for column, header in zip(columns, headers):
        shown[header] = [format_cell(v, s) for v, s in zip(frame[column], frame[column + " stderr"])]
    csv, markdown, page = (output / f"leaderboard-{suite}.{ext}" for ext in ("csv", "md", "html"))
    frame.to_csv(csv, index=False)
    lines = ["| " + " | ".join(shown.columns) + " |", "|" + " --- |" * len(shown.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in shown.itertuples(index=False)]
    markdown.write_text(f"# Leaderboard: {suite}\n\n" + "\n".join(lines) + "\n", encoding="utf-8")
    rows = [[{"text": model, "key": None}] + [{"text": text, "key": sort_key(value)}
                                              for text, value in zip(texts, values)]
            for model, texts, values in zip(frame["model"], shown[headers].itertuples(index=False),
                                            frame[columns].itertuples(index=False))]
    page.write_text(templates().get_template("leaderboard.html.j2").render(
        suite=suite, table={"columns": ["model", *headers], "rows": rows}), encoding="utf-8")
    return [csv, markdown, page]


def format_cell(value, stderr) -> str:
    if value is None or pd.isna(value):
        return "—"
    return f"{value:.4f}" + ("" if stderr is None or pd.isna(stderr) else f" ± {stderr:.4f}")
