"""`harness plan --baseline FILE_OR_RUN --min-effect TASK:METRIC=SIZE ...`: the documents each declared drop needs
for the gate to catch it with 80 % power, the --limit that gives them and the CPU minutes they cost
(harness/gate/plan.py). Without --min-effect it plans the baseline's declared drops."""

from __future__ import annotations

from pathlib import Path

from harness.errors import UserError
from harness.gate.baseline import check_scored, read_baseline
from harness.gate.min_effect import min_effects
from harness.gate.plan import plan
from harness.record.run_folder import read_run
from reports.plan import print_plan


def read_either(path: Path) -> tuple[tuple[dict, list[dict]], dict]:
    """(record, samples) and gate settings of a baseline file or a run folder."""
    if path.is_dir():
        record, samples = read_run(path)
        check_scored(record, samples, str(path))
        return (record, samples), {}
    return read_baseline(path)


def plan_command(baseline: Path, min_effect: dict[str, str], reference: Path | None, alpha: float, churn: float,
                 cv: float, budget_minutes: float) -> int:
    if not 0 < alpha < 1 or not 0 <= churn < 1 or cv <= 0:
        raise UserError("--alpha must be in (0, 1), --churn in [0, 1) and --cv positive")
    base, settings = read_either(baseline)
    declared = min_effects({**settings.get("min_effect", {}), **min_effect})
    if not declared:
        raise UserError(f"no drop to plan for: give --min-effect TASK:METRIC=SIZE ({baseline} declares none)")
    other = read_either(reference)[0] if reference else None
    rows = plan(base, declared, alpha=alpha, churn=churn, cv=cv, reference=other)
    print_plan(rows, f"documents to catch each drop with 80 % power (alpha {alpha}, Holm over the baseline's primary "
                     "tests)", budget_minutes)
    return 0
