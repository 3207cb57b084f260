"""What benchmark files share besides the task interface (harness/engine/task.py): where the shipped data lives, and
readers that turn a missing or damaged data file into one line naming the file and line."""

from __future__ import annotations

import json
from pathlib import Path

from harness.errors import UserError

DATA_DIR = Path(__file__).parent / "data"


def require_file(path: Path) -> Path:
    if not path.is_file():
        raise UserError(f"missing data file {path}")
    return path


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines data file; a damaged line stops the run with the file and line named."""
    rows = []
    with open(require_file(path), "rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise UserError(f"{path}, line {number}: not UTF-8 text (byte {error.start} of the line); the data "
                                "file is damaged or in another encoding") from None
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise UserError(f"{path}, line {number}: not valid JSON ({error.msg}, column {error.colno}); the "
                                "data file is damaged") from None
    return rows
