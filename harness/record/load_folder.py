"""The record of a load run (`harness load`): a folder with load.json, load.csv and requests.jsonl.

load.json holds the settings (target, workload, arrival process, SLO), when the run was made and its points, one
per rate or concurrency, each with the figures of harness/load/summary.py; load.csv is the same points as a table,
and requests.jsonl every request's times and tokens with the point it belongs to. load.json is written last and
records the other two files' sizes and sha256, as a run folder's results.json does, so a reader can tell a finished
load run from a damaged one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from harness.errors import UserError
from harness.record.atomic import check_vouched, write_atomic

LOAD_RECORD = "load.json"


def is_load_folder(folder: Path) -> bool:
    return (Path(folder) / LOAD_RECORD).is_file()


def write_load(folder: Path, points: list[dict], records: list[dict], settings: dict) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"load.csv": write_atomic(folder / "load.csv", pd.DataFrame(points).to_csv(index=False)),
             "requests.jsonl": write_atomic(folder / "requests.jsonl",
                                            "".join(json.dumps(record) + "\n" for record in records))}
    write_atomic(folder / LOAD_RECORD, json.dumps({**settings, "points": points, "files": files}, indent=1) + "\n")
    return folder


def read_load(folder: Path) -> dict:
    """load.json of a finished load run, with its points; a missing, damaged or changed file is one line."""
    folder = Path(folder)
    if not is_load_folder(folder):
        raise UserError(f"{folder} is not a load run (it needs {LOAD_RECORD})")
    try:
        record = json.loads((folder / LOAD_RECORD).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{folder / LOAD_RECORD} is damaged ({error})") from None
    if not isinstance(record, dict) or not isinstance(record.get("points"), list) or not record["points"] or \
            not all(isinstance(point, dict) for point in record["points"]):
        raise UserError(f"{folder / LOAD_RECORD} is not a load record (no points)")
    check_vouched(folder, record.get("files", {}), LOAD_RECORD, "load run")
    return record
