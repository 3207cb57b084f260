"""Baseline files for the regression gate: one JSON file holding what `harness gate` compares a run against.

A baseline is a run's record (results, task identities, systems figures) and its per-sample scores, without the
prompts and responses, in one file: {"format": "harness-baseline/1", "record": {...}, "samples": [{"task",
"doc_id", "scores"}]}. `harness gate --update-baseline` writes one deliberately; baselines live in
leaderboards/baselines/.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.errors import UserError
from harness.record.atomic import write_atomic
from harness.record.run_folder import read_run

FORMAT = "harness-baseline/1"
KEPT = ("created", "command", "model", "settings", "tasks", "results", "systems", "environment")


def write_baseline(run_folder: Path, path: Path) -> Path:
    record, samples = read_run(run_folder)
    baseline = {"format": FORMAT, "source": str(Path(run_folder).resolve()),
                "record": {key: record[key] for key in KEPT if key in record},
                "samples": [{"task": s["task"], "doc_id": s["doc_id"], "scores": s["scores"]} for s in samples]}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(baseline) + "\n")  # a reader never sees half a baseline
    return path


def read_baseline(path: Path) -> tuple[dict, list[dict]]:
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
    return baseline["record"], baseline["samples"]
