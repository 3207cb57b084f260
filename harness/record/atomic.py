"""Files written whole or not at all: a reader (or a run killed with SIGKILL mid-write) finds either the previous
complete file or none, never a torn one.

The bytes go to a temporary file in the same folder, which is flushed and fsynced, then renamed over the target
(rename within a file system is atomic), and the folder is fsynced so that the rename itself survives a crash.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from harness.errors import UserError


def write_atomic(path: Path, data: str | bytes) -> dict:
    """Writes `data` (text is UTF-8) to `path` atomically; returns its size and sha256, for a record to vouch for."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
    return {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}


def fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def check_vouched(folder: Path, files: dict, record_name: str, what: str) -> None:
    """Refuses, in one line, any file of `folder` whose size or sha256 differs from what its record (`record_name`,
    written last, from write_atomic's answers) vouches for; `what` names the run in the message."""
    for name, expected in files.items():
        data = (folder / name).read_bytes() if (folder / name).is_file() else b""
        if len(data) != expected["bytes"] or hashlib.sha256(data).hexdigest() != expected["sha256"]:
            raise UserError(f"{folder / name} is damaged or was changed after the {what}: {len(data)} bytes, not the "
                            f"{expected['bytes']} its {record_name} records")
