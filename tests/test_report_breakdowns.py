"""The report's breakdown tables (MMLU by subject and category, GLUE by task) are built from what the tasks wrote
into the run record, with no task imported; a run recorded before tasks declared them simply has none."""

from pathlib import Path

import pandas as pd

from reports import render
from reports.report import Run


def mmlu(subject: str, category: str) -> dict:
    return {"version": "1.0", "metrics": {"acc": {"aggregation": "mean", "higher_is_better": True}},
            "breakdown": {"table": "mmlu", "title": "MMLU by subject and category", "metrics": ["acc"],
                          "columns": {"category": category, "subject": subject}}}


def glue(metrics: list[str]) -> dict:
    return {"version": "1.0", "metrics": {m: {"aggregation": "mean", "higher_is_better": True} for m in metrics},
            "breakdown": {"table": "glue", "title": "GLUE by task", "metrics": metrics, "columns": {}}}


def result(**values) -> dict:
    return {"n": 10, **{k: v for name, value in values.items() for k, v in ((name, value), (name + "_stderr", 0.1))}}


RECORD = {
    "model": {"spec": "m"},
    "tasks": {"mmlu_philosophy": mmlu("philosophy", "humanities"), "mmlu_anatomy": mmlu("anatomy", "stem"),
              "mmlu_astronomy": mmlu("astronomy", "stem"), "mrpc": glue(["acc", "f1"]), "cola": glue(["mcc"]),
              "gsm8k": {"version": "3.0", "metrics": {"exact_match": {}}}},
    "results": {"mmlu_philosophy": result(acc=0.3), "mmlu_anatomy": result(acc=0.4), "mmlu_astronomy": result(acc=0.5),
                "mmlu_stem": {**result(acc=0.45), "members": ["mmlu_anatomy", "mmlu_astronomy"]},
                "mrpc": result(acc=0.6, f1=0.7), "cola": result(mcc=0.1), "gsm8k": result(exact_match=0.2),
                "glue": {**result(score=0.4), "members": ["mrpc", "cola"], "aggregation": "macro"}},
}


def test_tables_come_from_the_record():
    content = render.build([Run("m", Path("run"), RECORD, [])], most_failures=5)
    assert list(content["tables"]) == ["quality", "mmlu", "glue"]  # no systems figures in this record
    assert content["titles"]["mmlu"] == "MMLU by subject and category" and content["titles"]["glue"] == "GLUE by task"
    mmlu_table = content["tables"]["mmlu"]
    assert list(mmlu_table.columns) == ["run", "task", "category", "subject", "metric", "value", "stderr", "ci95_low",
                                        "ci95_high", "n"]
    assert list(zip(mmlu_table.category, mmlu_table.subject)) == [
        ("humanities", "philosophy"), ("stem", "anatomy"), ("stem", "astronomy")]  # sorted by the declared columns
    glue_table = content["tables"]["glue"]
    assert list(zip(glue_table.task, glue_table.metric)) == [("mrpc", "acc"), ("mrpc", "f1"), ("cola", "mcc")]
    assert "category" not in glue_table.columns


def test_old_runs_without_declarations_have_no_breakdown_tables(tmp_path):
    old = {**RECORD, "tasks": {task: {k: v for k, v in entry.items() if k != "breakdown"}
                               for task, entry in RECORD["tasks"].items()}}
    written = render.write([Run("m", Path("run"), old, [])], ["csv", "md"], tmp_path)
    assert sorted(path.name for path in written) == ["quality.csv", "report.md"]
    assert len(pd.read_csv(tmp_path / "quality.csv")) == 9  # every metric of every task and group
    new = render.write([Run("m", Path("run"), RECORD, [])], ["csv", "md", "html"], tmp_path / "new")
    assert sorted(path.name for path in written + new if path.parent.name == "new") == [
        "glue.csv", "mmlu.csv", "quality.csv", "report.html", "report.md"]
    markdown = (tmp_path / "new" / "report.md").read_text()
    assert markdown.index("## MMLU by subject and category") < markdown.index("## GLUE by task")
    assert "GLUE by task" in (tmp_path / "new" / "report.html").read_text()


def mt_bench(category: str, chart: bool) -> dict:
    return {"version": "1", "metrics": {"score": {"aggregation": "pooled_mean", "higher_is_better": True}},
            "breakdown": {"table": "mt_bench", "title": "MT-Bench by category", "metrics": ["score"],
                          "columns": {"category": category}, **({"chart": "score"} if chart else {})}}


def test_a_breakdown_that_asks_for_a_chart_gets_one_bar_per_run_and_category():
    def record(model, scores, chart=True):
        return {"model": {"spec": model},
                "tasks": {f"mt_bench_{c}": mt_bench(c, chart) for c in scores},
                "results": {f"mt_bench_{c}": {"n": 10, "score": v, "score_stderr": 0.2, "score_ci95": [v - 0.4, v + 0.4]}
                            for c, v in scores.items()}}

    runs = [Run("old", Path("a"), record("a", {"writing": 6.0, "math": 3.0}, chart=False), []),
            Run("b", Path("b"), record("b", {"writing": 7.0, "math": 2.5}), [])]
    content = render.build(runs, most_failures=5)
    (name,) = content["breakdown_charts"]  # the old run's declaration has no chart; the newer one's gives it
    svg = content["breakdown_charts"][name]["svg"]
    assert name == "mt_bench" and svg.startswith("<svg") and "score (higher is better)" in svg
    assert svg.count(">writing<") == 1 and svg.count(">math<") == 1  # one tick label per category
    assert svg.count('id="patch_') >= 2 * 2 + 1  # four bars (two runs, two categories) and the background
    html = render.render_html(runs, [], content, "t")
    assert html.count("MT-Bench by category: score (whiskers: 95 % interval)") == 1
    assert not render.build(runs[:1], most_failures=5)["breakdown_charts"]  # no declared chart, no chart
