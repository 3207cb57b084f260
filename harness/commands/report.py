"""`harness report RUN...` (tables of run folders as CSV, Markdown and HTML) and `harness leaderboard` (models x
tasks from the results store)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from harness.errors import UserError
from harness.record.store import ResultsStore
from reports.leaderboard import SUITES, leaderboard_frame, render
from reports.render import FORMATS, write
from reports.report import load_runs


def report(runs: list[Path], formats: str, output: Path | None, max_failures: int) -> int:
    chosen = [f.strip() for f in formats.split(",") if f.strip()]
    if not chosen or any(f not in FORMATS for f in chosen):
        raise UserError(f"--format takes a comma-separated list of {', '.join(FORMATS)}; got {formats!r}")
    output = output or (runs[0] / "report" if len(runs) == 1 else
                        Path("runs") / f"report-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file, not a folder")
    for path in write(load_runs(runs), chosen, output, max_failures):
        print(path)
    return 0


def leaderboard(suite: str, results_db: Path | None, output: Path) -> int:
    if suite not in SUITES:
        raise UserError(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")
    if results_db is not None and not results_db.is_file():
        raise UserError(f"no results store at {results_db}")
    store = ResultsStore(results_db)
    frame = leaderboard_frame(store, suite)
    store.close()
    if frame.empty:
        raise UserError(f"the results store {store.path} holds no runs yet; `harness run` records each run there")
    for path in render(frame, suite, output):
        print(path)
    return 0
