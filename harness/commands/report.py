"""`harness report RUN...` (tables of run folders as CSV, Markdown and HTML) and `harness leaderboard` (models x
tasks from the results store).

With several runs the report opens with each run's paired comparison against the first (harness/gate/compare.py,
as `harness compare` prints it). It is computed here and handed to reports as plain rows: reports read run records
only. A pair that cannot be compared still gets its report, its rows saying why.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from harness.errors import UserError
from harness.gate.baseline import check_scored
from harness.gate.compare import compare, not_comparable
from harness.record.load_folder import is_load_folder
from harness.record.store import ResultsStore
from reports.leaderboard import SUITES, leaderboard_frame, render
from reports.load import load_load_runs
from reports.render import FORMATS, write
from reports.report import Run, load_runs

ALPHA, CORRECTION = 0.05, "holm"  # `harness compare`'s defaults; reports/render.py's note names Holm


def report(runs: list[Path], formats: str, output: Path | None, max_failures: int) -> int:
    chosen = [f.strip() for f in formats.split(",") if f.strip()]
    if not chosen or any(f not in FORMATS for f in chosen):
        raise UserError(f"--format takes a comma-separated list of {', '.join(FORMATS)}; got {formats!r}")
    output = output or (runs[0] / "report" if len(runs) == 1 else
                        Path("runs") / f"report-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file, not a folder")
    # Folders of `harness load` go to the report's serving section; all others are evaluation runs.
    loaded = load_runs([run for run in runs if not is_load_folder(run)])
    load = load_load_runs([run for run in runs if is_load_folder(run)])
    comparisons = [(loaded[0].label, run.label, paired_rows(loaded[0], run)) for run in loaded[1:]]
    for path in write(loaded, chosen, output, max_failures, comparisons, load):
        print(path)
    return 0


def paired_rows(reference: Run, run: Run) -> list[dict]:
    """The quality rows of `harness compare REFERENCE RUN`; speed and memory are in the report's systems table.
    Where the runs cannot be paired at all (samples without scores, no task in common), one "not comparable" row
    says why instead of ending the report."""
    try:
        for checked in (reference, run):
            check_scored(checked.record, checked.samples, str(checked.folder))
    except UserError as error:
        return [not_comparable("(all)", "", "primary", str(error))]
    if not set(reference.record["results"]) & set(run.record["results"]):
        return [not_comparable("(all)", "", "primary", "no task in common")]
    rows = compare((reference.record, reference.samples), (run.record, run.samples), alpha=ALPHA,
                   correction=CORRECTION, systems=False)
    return rows or [not_comparable("(all)", "", "primary", "no task metric described in either run")]


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
