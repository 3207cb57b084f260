"""`harness compare RUN_A RUN_B`: the paired comparison of two runs, task by task (RUN_A is the reference).

Exit 0 when the runs had something to compare, 3 (as `harness gate`'s "not comparable") when no task was
comparable, 2 on bad input. It never fails on a difference: that is the gate's job.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from harness.errors import UserError
from harness.gate.baseline import check_scored
from harness.gate.compare import compare
from harness.gate.multiplicity import CORRECTIONS
from harness.record.atomic import write_atomic
from harness.record.run_folder import read_run
from reports.gate import print_gate

NOT_COMPARABLE = 3


def finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def compare_runs(first: Path, second: Path, alpha: float, correction: str, output: Path | None) -> int:
    if not 0 < alpha < 1:
        raise UserError("--alpha must be between 0 and 1")
    if correction not in CORRECTIONS:
        raise UserError(f"--correction must be one of {', '.join(CORRECTIONS)}")
    runs = []
    for folder in (first, second):
        record, samples = read_run(folder)
        check_scored(record, samples, str(folder))
        runs.append((record, samples))
    if not set(runs[0][0]["results"]) & set(runs[1][0]["results"]):
        print(f"harness: {first} and {second} have no task in common", file=sys.stderr)
        return NOT_COMPARABLE
    rows = compare(runs[0], runs[1], alpha=alpha, correction=correction)
    print_gate(rows, f"{second} against {first} (alpha {alpha}, {correction} correction)")
    if output:
        write_atomic(output, json.dumps([{k: finite(v) for k, v in row.items()} for row in rows], indent=1) + "\n")
        print(f"rows written: {output}")
    quality = [row for row in rows if row["role"] != "systems"]
    if not any(row["verdict"] != "not comparable" for row in quality):
        print("nothing comparable: the runs share no task that took the same test", flush=True)
        return NOT_COMPARABLE
    return 0
