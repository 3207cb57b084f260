"""The run record: a folder with results.json, samples.jsonl and results.csv, written all at once.

Everything that decides the numbers is recorded (model fingerprint, dtype, device, task versions, prompt hashes,
few-shot ids, data sha256, batch policy, seed, package versions), so two runs can be compared or reproduced.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import pandas as pd

from harness.errors import UserError
from reports.systems import systems_rows
from reports.tables import results_frame

PACKAGES = ["harness", "torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas"]


def environment() -> dict:
    import torch

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": versions,
    }


def check_output_folder(folder: Path) -> None:
    """Fails before any work if the run folder cannot be written (not after an hour of evaluation)."""
    if folder.exists():
        raise UserError(f"output folder {folder} already exists; choose another --output")
    parent = folder.parent
    if parent.exists() and not parent.is_dir():
        raise UserError(f"cannot write the run into {folder}: {parent} is a file")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {parent}: {error.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise UserError(f"cannot write the run into {parent}: permission denied")


def write_run(folder: Path, record: dict, samples: list[dict]) -> Path:
    """Writes into a hidden staging folder and renames it, so an interrupted write leaves no half run."""
    folder = Path(folder)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        (staging / "results.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        with open(staging / "samples.jsonl", "w", encoding="utf-8") as handle:
            for sample in samples:
                handle.write(json.dumps(sample, ensure_ascii=False) + "\n")
        frame = results_frame(record["results"])
        if "systems" in record:  # the systems figures of the same run, as rows of the same table
            frame = pd.concat([frame, pd.DataFrame(systems_rows(record["systems"]), columns=frame.columns)])
        frame.to_csv(staging / "results.csv", index=False)
        staging.chmod(0o755)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
