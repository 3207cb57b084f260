"""`harness gate --run RUN --baseline FILE`: compare a run with a baseline; exit 1 if something regressed."""

from __future__ import annotations

from pathlib import Path

from harness.errors import UserError
from harness.gate.baseline import read_baseline, write_baseline
from harness.gate.compare import SYSTEMS_FIGURES, compare
from harness.record.run_folder import read_run
from reports.gate import print_gate


def gate(run: Path, baseline: Path, alpha: float, max_drop: float, update_baseline: bool) -> int:
    if update_baseline:
        print(f"baseline written: {write_baseline(run, baseline)}")
        return 0
    if not 0 < alpha < 1 or max_drop < 0:
        raise UserError("--alpha must be between 0 and 1 and --max-drop at least 0")
    rows = compare(read_baseline(baseline), read_run(run), alpha=alpha,
                   max_drop={name: max_drop for name in SYSTEMS_FIGURES})
    print_gate(rows, f"{run} against {baseline}")
    regressed = [row for row in rows if row["verdict"] == "regressed"]
    print(f"{len(regressed)} regressed of {len(rows)} compared" if regressed else "nothing regressed")
    return 1 if regressed else 0
