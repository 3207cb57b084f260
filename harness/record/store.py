"""The results store: every run recorded in an embedded SQLite database, for leaderboards and history.

One row per run (its folder, time, model spec and fingerprint, the harness version and settings) and one row per
task and metric of it, with the identity fields that decide whether two results are comparable: the task's
version, its prompt hash and its few-shot count, and how many documents were evaluated. `latest` answers "the
newest comparable result of this model on this task", which is what a leaderboard cell shows.

The database lives at $HARNESS_HOME/results.sqlite unless a path is given (`harness run --results-db PATH`, or
$HARNESS_RESULTS_DB).
A run is recorded once: recording the same folder again replaces its rows.

Load runs (`harness load`, harness/record/load_folder.py) are kept beside them: one row per load run (its folder,
time, target URL and served model, settings) and one row per point (a rate or a concurrency) and figure, so that
"what did this server sustain last week" is a query like any other.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from harness.record.load_folder import read_load
from harness.record.tables import is_metric
from harness.settings import results_store_path

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    folder TEXT UNIQUE NOT NULL,
    created TEXT NOT NULL,
    model_spec TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    harness_version TEXT,
    settings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    task TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL,
    stderr REAL,
    n INTEGER,
    task_version TEXT,
    prompt_hash TEXT,
    num_fewshot INTEGER,
    docs_evaluated INTEGER
);
CREATE TABLE IF NOT EXISTS load_runs (
    id INTEGER PRIMARY KEY,
    folder TEXT UNIQUE NOT NULL,
    created TEXT NOT NULL,
    url TEXT NOT NULL,
    model TEXT NOT NULL,
    settings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS load_points (
    load_run_id INTEGER NOT NULL REFERENCES load_runs(id) ON DELETE CASCADE,
    point INTEGER NOT NULL,
    requested_rate REAL,
    concurrency INTEGER,
    figure TEXT NOT NULL,
    value REAL
);
CREATE INDEX IF NOT EXISTS results_lookup ON results (task, metric, task_version, prompt_hash, num_fewshot);
"""


class ResultsStore:
    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else results_store_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.connection = sqlite3.connect(self.path)
        self.connection.execute("PRAGMA foreign_keys = ON")
        self.connection.executescript(SCHEMA)

    def record(self, folder: Path) -> int:
        """Adds (or replaces) the run in `folder`; returns its id."""
        folder = Path(folder).resolve()
        record = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        with self.connection:
            self.connection.execute("DELETE FROM runs WHERE folder = ?", (str(folder),))
            cursor = self.connection.execute(
                "INSERT INTO runs (folder, created, model_spec, fingerprint, harness_version, settings) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (str(folder), record["created"], record["model"]["spec"], record["model"]["fingerprint"],
                 record.get("harness_version"), json.dumps(record.get("settings", {}), sort_keys=True)))
            run_id = cursor.lastrowid
            tasks = record.get("tasks", {})
            for task, values in record["results"].items():
                identity = tasks.get(task, {})
                for metric, value in values.items():
                    # A metric's stderr rides in its row; its interval (a list) is not kept here.
                    if not is_metric(metric) or not isinstance(value, (int, float)):
                        continue
                    self.connection.execute(
                        "INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (run_id, task, metric, value, values.get(metric + "_stderr"), values.get("n"),
                         identity.get("version"), identity.get("prompt_hash"), identity.get("num_fewshot"),
                         identity.get("docs_evaluated")))
        return run_id

    def record_load(self, folder: Path) -> int:
        """Adds (or replaces) the load run in `folder`, every numeric figure of every point; returns its id."""
        folder = Path(folder).resolve()
        record = read_load(folder)
        settings = {key: value for key, value in record.items() if key not in ("points", "files")}
        with self.connection:
            self.connection.execute("DELETE FROM load_runs WHERE folder = ?", (str(folder),))
            run_id = self.connection.execute(
                "INSERT INTO load_runs (folder, created, url, model, settings) VALUES (?, ?, ?, ?, ?)",
                (str(folder), record.get("created") or "", str(record.get("url")), str(record.get("model")),
                 json.dumps(settings, sort_keys=True))).lastrowid
            for index, point in enumerate(record["points"]):
                for figure, value in point.items():
                    # Numbers only (kept_schedule, a bool, is kept as 1 or 0); the errors' texts stay in the folder.
                    if figure in ("requested_rate", "concurrency") or not isinstance(value, (int, float)):
                        continue
                    self.connection.execute("INSERT INTO load_points VALUES (?, ?, ?, ?, ?, ?)",
                                            (run_id, index, point.get("requested_rate"), point.get("concurrency"),
                                             figure, value))
        return run_id

    def load_points(self, model: str | None = None) -> list[dict]:
        """Every recorded point of every load run (of `model`, when given), oldest run first: one dict per point
        with the run's folder, time, URL and model, and the point's figures."""
        condition, parameters = ("WHERE load_runs.model = ?", [model]) if model else ("", [])
        rows = self.connection.execute(
            "SELECT load_runs.folder, load_runs.created, load_runs.url, load_runs.model, load_points.point, "
            "load_points.requested_rate, load_points.concurrency, load_points.figure, load_points.value "
            f"FROM load_points JOIN load_runs ON load_runs.id = load_points.load_run_id {condition} "
            "ORDER BY load_runs.created, load_runs.id, load_points.point", parameters).fetchall()
        points: dict[tuple, dict] = {}
        for folder, created, url, served, point, rate, concurrency, figure, value in rows:
            entry = points.setdefault((folder, point), {"folder": folder, "created": created, "url": url,
                                                        "model": served, "point": point, "requested_rate": rate,
                                                        "concurrency": concurrency})
            entry[figure] = value
        return list(points.values())

    def latest(self, model_spec: str, task: str, metric: str, task_version: str | None = None,
               prompt_hash: str | None = None, num_fewshot: int | None = None, n: int | None = None) -> dict | None:
        """The newest result of `model_spec` on `task`/`metric` whose identity fields match those given."""
        conditions, parameters = ["runs.model_spec = ?", "results.task = ?", "results.metric = ?"], \
            [model_spec, task, metric]
        for column, value in (("task_version", task_version), ("prompt_hash", prompt_hash),
                              ("num_fewshot", num_fewshot), ("n", n)):
            if value is not None:
                conditions.append(f"results.{column} = ?")
                parameters.append(value)
        row = self.connection.execute(
            "SELECT runs.folder, runs.created, runs.fingerprint, results.value, results.stderr, results.n, "
            "results.task_version, results.prompt_hash, results.num_fewshot, results.docs_evaluated "
            "FROM results JOIN runs ON runs.id = results.run_id WHERE " + " AND ".join(conditions) +
            " ORDER BY runs.created DESC, runs.id DESC LIMIT 1", parameters).fetchone()
        if row is None:
            return None
        keys = ("folder", "created", "fingerprint", "value", "stderr", "n", "task_version", "prompt_hash",
                "num_fewshot", "docs_evaluated")
        return dict(zip(keys, row))

    def runs(self) -> list[dict]:
        rows = self.connection.execute("SELECT id, folder, created, model_spec, fingerprint FROM runs "
                                       "ORDER BY created").fetchall()
        return [dict(zip(("id", "folder", "created", "model_spec", "fingerprint"), row)) for row in rows]

    def close(self) -> None:
        self.connection.close()
