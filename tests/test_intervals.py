"""The 95 % interval from the engine to every table: a task that declares clusters (Task.cluster) gets clustered
stderrs and "cluster" in its samples; groups get theirs (pooled: stratified by task; macro: value +- 1.96 stderr);
results.csv, the printed table and the report show the recorded interval, and leave it empty for a record written
before results carried one."""

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from scipy.stats import t

from harness import stats
from harness.engine.evaluator import Group, evaluate
from harness.engine.model import LanguageModel
from harness.engine.requests import LoglikelihoodRequest, LoglikelihoodResult
from harness.engine.task import Doc, Metric, Task
from harness.record.run_folder import write_run
from harness.record.store import ResultsStore
from reports.report import Run, quality_frame
from reports.tables import print_results

PASSAGES, QUESTIONS = 10, 3


class AnswersByPrompt(LanguageModel):
    """A model whose loglikelihood of every continuation is fixed by its prompt: 0 (right) or -5 (wrong)."""

    spec = implementation = "fake"
    device, dtype = "cpu", "float32"

    def __init__(self, right: set[str]):
        self.right = right

    def loglikelihood(self, requests, batch_size=None, progress=None, seed=0, occurrences=None):
        return [LoglikelihoodResult(0.0 if r.context in self.right else -5.0, True) for r in requests]

    def loglikelihood_rolling(self, requests, batch_size=None, progress=None, seed=0, occurrences=None):
        raise NotImplementedError

    def generate_until(self, requests, batch_size=None, progress=None, seed=0, occurrences=None):
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:
        return "fake"

    def info(self) -> dict:
        return {}

    def apply_chat_template(self, messages):
        raise NotImplementedError


@dataclass
class PassageQuestions(Task):
    """Several questions on each passage; clustered on the passage unless told not to."""

    clustered: bool = True
    metrics: list[Metric] = field(default_factory=lambda: [Metric("acc")])

    def docs(self) -> list[Doc]:
        return [Doc(str(i), {"passage": f"p{i // QUESTIONS}", "question": f"{self.name} q{i}"})
                for i in range(PASSAGES * QUESTIONS)]

    def requests(self, doc: Doc) -> list[LoglikelihoodRequest]:
        return [LoglikelihoodRequest(doc.fields["question"], " yes")]

    def score(self, doc: Doc, responses: list) -> dict:
        return {"acc": float(responses[0].logprob > -1)}

    def target(self, doc: Doc) -> str:
        return "yes"

    def cluster(self, doc: Doc) -> str | None:
        return doc.fields["passage"] if self.clustered else None


def passage_run():
    """Two tasks on the same passages, the model right on whole passages (0, 2, 4, ...) at once: the questions of
    a passage succeed or fail together."""
    tasks = [PassageQuestions(name="clustered"), PassageQuestions(name="plain", clustered=False)]
    right = {doc.fields["question"] for task in tasks for doc in task.docs() if int(doc.fields["passage"][1:]) % 2 == 0}
    groups = {"pooled": Group(["clustered", "plain"]), "macro": Group(["clustered", "plain"], "macro")}
    return evaluate(AnswersByPrompt(right), tasks, groups=groups)


def test_a_task_that_declares_clusters_gets_clustered_stderrs_and_cluster_in_its_samples():
    evaluation = passage_run()
    clustered, plain = evaluation.results["clustered"], evaluation.results["plain"]
    values = [float(passage % 2 == 0) for passage in range(PASSAGES) for _ in range(QUESTIONS)]
    assert clustered["acc"] == plain["acc"] == 0.5  # clustering never changes the value
    assert plain["acc_stderr"] == stats.mean_stderr(values)
    passages = [f"p{passage}" for passage in range(PASSAGES) for _ in range(QUESTIONS)]
    assert clustered["acc_stderr"] == pytest.approx(stats.clustered_mean_stderr(values, passages))
    assert clustered["acc_stderr"] > 1.6 * plain["acc_stderr"]  # 3 questions a passage, moving together
    half = t.ppf(0.975, PASSAGES - 1) * clustered["acc_stderr"]  # Student's t on clusters - 1 degrees of freedom
    assert clustered["acc_ci95"] == pytest.approx([0.5 - half, 0.5 + half])
    assert plain["acc_ci95"] == pytest.approx(list(stats.wilson_interval(15, 30)))  # unclustered 0/1: Wilson
    samples = {task: [s for s in evaluation.samples if s["task"] == task] for task in ("clustered", "plain")}
    assert [s["cluster"] for s in samples["clustered"]] == passages
    assert all("cluster" not in s for s in samples["plain"])


def test_groups_get_a_stratified_or_combined_stderr_and_an_interval():
    results = passage_run().results
    members = [results["clustered"], results["plain"]]
    pooled = results["pooled"]
    assert pooled["acc"] == 0.5 and pooled["n"] == 2 * PASSAGES * QUESTIONS
    stratified = math.sqrt(sum(0.25 * m["acc_stderr"] ** 2 for m in members))  # (n_s / N)^2 = 1/4 each
    assert pooled["acc_stderr"] == pytest.approx(stratified)
    assert pooled["acc_ci95"] == pytest.approx([0.5 - stats.Z_95 * stratified, 0.5 + stats.Z_95 * stratified])
    macro = results["macro"]
    assert macro["score_stderr"] == pytest.approx(math.sqrt(sum(m["acc_stderr"] ** 2 for m in members)) / 2)
    assert macro["score_ci95"] == pytest.approx([0.5 - stats.Z_95 * macro["score_stderr"],
                                                 0.5 + stats.Z_95 * macro["score_stderr"]])


RECORD = {"created": "2026-11-01T00:00:00+00:00", "model": {"spec": "m", "fingerprint": "f" * 64},
          "tasks": {"t": {"version": "1", "metrics": {"acc": {"aggregation": "mean", "higher_is_better": True}}}},
          "results": {"t": {"n": 2, "acc": 0.5, "acc_stderr": 0.5, "acc_ci95": [0.0945, 0.9055]},
                      "u": {"n": 1, "acc": 1.0, "acc_stderr": None, "acc_ci95": None}}}


def test_results_csv_has_the_interval_after_the_stderr(tmp_path):
    write_run(tmp_path, RECORD, [])
    table = pd.read_csv(tmp_path / "results.csv")
    assert list(table.columns) == ["task", "metric", "value", "stderr", "ci95_low", "ci95_high", "n"]
    assert list(table.metric) == ["acc", "acc"]  # no row for acc_stderr or acc_ci95
    assert table.loc[0, ["ci95_low", "ci95_high"]].tolist() == [0.0945, 0.9055]
    assert table.loc[1, ["ci95_low", "ci95_high"]].isna().all()


def test_the_report_reads_the_recorded_interval_and_leaves_an_old_records_empty():
    frame = quality_frame(Run("m", Path("run"), RECORD, [])).set_index("task")
    assert (frame.loc["t", "ci95_low"], frame.loc["t", "ci95_high"]) == (0.0945, 0.9055)  # not 0.5 +- 0.98
    old = {**RECORD, "results": {"t": {"n": 2, "acc": 0.5, "acc_stderr": 0.5}}}
    row = quality_frame(Run("m", Path("run"), old, [])).iloc[0]
    assert row.stderr == 0.5 and pd.isna(row.ci95_low) and pd.isna(row.ci95_high)


def test_the_printed_table_shows_the_interval():
    output = io.StringIO()
    print_results(RECORD["results"], "run", Console(file=output, width=120))
    text = output.getvalue()
    assert "95 % CI" in text and "[0.0945, 0.9055]" in text and "acc_ci95" not in text


def test_the_store_ignores_intervals(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps(RECORD))
    store = ResultsStore(tmp_path / "results.sqlite")
    store.record(tmp_path / "run")
    rows = store.connection.execute("SELECT task, metric, value, stderr FROM results ORDER BY task").fetchall()
    assert rows == [("t", "acc", 0.5, 0.5), ("u", "acc", 1.0, None)]
