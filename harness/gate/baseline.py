"""Baseline files for the regression gate: one JSON file holding what `harness gate` compares a run against.

A baseline is a run's record (results, task identities, systems figures) and its per-sample scores, without the
prompts and responses, in one file: {"format": "harness-baseline/1", "record": {...}, "samples": [{"task",
"doc_id", "scores"}]}, and the gate's own settings under "gate": {"alpha", "correction", "min_effect":
{"task:metric": "0.03" or "2%"}}, the drops it is declared to catch. `harness gate --update-baseline` writes one
deliberately; baselines live in leaderboards/baselines/.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.errors import UserError
from harness.record.atomic import write_atomic
from harness.record.run_folder import read_run

FORMAT = "harness-baseline/1"
KEPT = ("created", "command", "model", "settings", "tasks", "results", "systems", "environment")


def write_baseline(run_folder: Path, path: Path, gate_settings: dict) -> Path:
    record, samples = read_run(run_folder)
    check_scored(record, samples, str(run_folder))
    baseline = {"format": FORMAT, "source": str(Path(run_folder).resolve()), "gate": gate_settings,
                "record": {key: record[key] for key in KEPT if key in record},
                "samples": [{"task": s["task"], "doc_id": s["doc_id"], "scores": s["scores"]} for s in samples]}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(baseline) + "\n")  # a reader never sees half a baseline
    return path


def check_scored(record: dict, samples: list, where: str) -> None:
    """Refuses, in one line, a run whose samples cannot be paired: not records of task, doc_id and scores, or a
    task with results and no per-sample scores."""
    if not isinstance(record.get("results"), dict):
        raise UserError(f"{where} has no results")
    for number, sample in enumerate(samples, start=1):
        if not (isinstance(sample, dict) and isinstance(sample.get("scores"), dict) and "task" in sample
                and "doc_id" in sample):
            raise UserError(f"{where}: sample {number} is not a scored sample (task, doc_id, scores)")
    scored = {sample["task"] for sample in samples}
    for task, values in record["results"].items():
        if "members" not in values and task not in scored:
            raise UserError(f"{where} has no per-sample scores for {task}; it cannot be compared document by document")


def read_baseline(path: Path) -> tuple[tuple[dict, list[dict]], dict]:
    """((record, samples), the gate settings written with it)."""
    if not path.is_file():
        raise UserError(f"no baseline file {path}; write one with `harness gate --run RUN --baseline {path} "
                        "--update-baseline`")
    try:
        baseline = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path} is not a baseline file (not JSON: {error})") from None
    if not isinstance(baseline, dict) or baseline.get("format") != FORMAT:
        found = baseline.get("format") if isinstance(baseline, dict) else type(baseline).__name__
        raise UserError(f"{path} is not a baseline of format {FORMAT} (found {found!r})")
    if not isinstance(baseline.get("record"), dict) or not isinstance(baseline.get("samples"), list):
        raise UserError(f"{path} is a damaged baseline: it lacks its record or samples")
    check_scored(baseline["record"], baseline["samples"], str(path))
    settings = baseline.get("gate", {})
    if not isinstance(settings, dict):
        raise UserError(f"{path} is a damaged baseline: its gate settings are not an object")
    return (baseline["record"], baseline["samples"]), settings
