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
from harness.record.atomic import check_vouched, write_atomic
from harness.record.tables import results_frame, systems_rows

PACKAGES = ["harness", "torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas"]


def environment() -> dict:
    import torch  # deferred: only a run writes its environment; report and gate read records without torch

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


def check_output_folder(folder: Path) -> bool:
    """Fails before any work if the run folder cannot be written (not after an hour of evaluation). An existing
    empty folder is taken (what `mktemp -d` gives a script); a folder with anything in it is refused. Returns
    whether the folder already existed, so that a failed run removes only what it made."""
    if folder.exists():
        if not folder.is_dir():
            raise UserError(f"output {folder} is a file; choose a folder for --output")
        if any(folder.iterdir()):
            raise UserError(f"output folder {folder} already exists and is not empty; choose another --output")
    parent = folder if folder.exists() else folder.parent
    if parent.exists() and not parent.is_dir():
        raise UserError(f"cannot write the run into {folder}: {parent} is a file")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {parent}: {error.strerror}") from None
    try:  # os.access would answer yes for root even where nothing can be made (/sys): try for real
        Path(tempfile.mkdtemp(prefix=".harness-probe-", dir=parent)).rmdir()
    except OSError as error:
        raise UserError(f"cannot write the run into {parent}: {error.strerror}") from None
    return folder.exists()


def remove_run(folder: Path, existed: bool) -> None:
    """Removes a run that bad input stopped: the folder, or only its contents if the user made it."""
    if not existed:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for entry in folder.iterdir() if folder.is_dir() else []:
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


INVOCATION = "run.json"  # written when a run starts: what `harness run --resume` reads back


def start_run(folder: Path, invocation: dict) -> None:
    """Creates the run folder with only run.json in it: the command, so that an interrupted run can resume."""
    folder.mkdir(parents=True, exist_ok=True)  # check_output_folder has refused a folder with anything in it
    write_atomic(folder / INVOCATION, json.dumps(invocation, indent=2) + "\n")


def write_run(folder: Path, record: dict, samples: list[dict]) -> Path:
    """Writes samples.jsonl, results.csv and then results.json, each atomically (harness/record/atomic.py). results.json
    comes last and records the others' sizes and sha256, so a run folder with results.json is complete, and a
    reader can tell a damaged or truncated samples.jsonl from a whole one (read_run, below)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"samples.jsonl": write_atomic(folder / "samples.jsonl", "".join(
        json.dumps(sample, ensure_ascii=False) + "\n" for sample in samples))}
    frame = results_frame(record["results"])
    if "systems" in record:  # the systems figures of the same run, as rows of the same table
        frame = pd.concat([frame, pd.DataFrame(systems_rows(record["systems"]), columns=frame.columns)])
    files["results.csv"] = write_atomic(folder / "results.csv", frame.to_csv(index=False))
    write_atomic(folder / "results.json", json.dumps({**record, "files": files}, indent=2, ensure_ascii=False) + "\n")
    return folder


def read_run(folder: Path) -> tuple[dict, list[dict]]:
    """(results.json, samples.jsonl as a list) of a finished run folder; a missing, damaged or changed file is
    refused with one line. The one reader of run folders: gate, report and rerun use it."""
    folder = Path(folder)
    if not (folder / "results.json").is_file() or not (folder / "samples.jsonl").is_file():
        raise UserError(f"{folder} is not a run folder (it needs results.json and samples.jsonl)")
    try:
        record = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        with open(folder / "samples.jsonl", encoding="utf-8") as handle:
            samples = [json.loads(line) for line in handle if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{folder} holds a damaged results.json or samples.jsonl ({error})") from None
    if not isinstance(record, dict) or "results" not in record:
        raise UserError(f"{folder / 'results.json'} is not a run record")
    # results.json, written last, vouches for the other files (runs from before it did so carry no "files").
    check_vouched(folder, record.get("files", {}), "results.json", "run")
    return record, samples
