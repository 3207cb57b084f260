"""`harness gate --run RUN --baseline FILE`: compare a run with a baseline, as a nightly CI job does.

Exit codes, so that a script can tell them apart:
  0  nothing regressed, everything was comparable, and every declared drop could have been seen
  1  something regressed (a primary quality test after correction, or a systems figure past --max-drop)
  2  bad input (a damaged or foreign file), with one line on stderr
  3  something was not comparable (another task version, prompt, few-shot draw, data, seed, chat template,
     document set; a task missing on one side); --allow-incomparable accepts it when the change is deliberate
  4  underpowered: a metric's declared minimum effect (--min-effect, or the baseline's) is smaller than what
     this comparison could have detected, so passing would say nothing
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import UserError
from harness.gate.baseline import check_scored, read_baseline, write_baseline
from harness.gate.compare import SYSTEMS_FIGURES, compare
from harness.gate.min_effect import min_effects
from harness.gate.multiplicity import CORRECTIONS
from harness.record.run_folder import read_run
from reports.gate import print_gate

PASSED, REGRESSED, NOT_COMPARABLE, UNDERPOWERED = 0, 1, 3, 4
DEFAULT_ALPHA, DEFAULT_CORRECTION = 0.05, "holm"


def exit_code(rows: list[dict], allow_incomparable: bool) -> int:
    verdicts = {row["verdict"] for row in rows if row["role"] in ("primary", "systems")}
    if "regressed" in verdicts:
        return REGRESSED
    if not allow_incomparable and any(row["verdict"] == "not comparable" for row in rows):
        return NOT_COMPARABLE
    if any(row["verdict"] == "underpowered" for row in rows):
        return UNDERPOWERED
    return PASSED


def gate(run: Path, baseline: Path, alpha: float | None, correction: str | None, max_drop: float,
         min_effect: dict[str, str], allow_incomparable: bool, quality_only: bool, update_baseline: bool) -> int:
    if alpha is not None and not 0 < alpha < 1:
        raise UserError("--alpha must be between 0 and 1")
    if max_drop < 0:
        raise UserError("--max-drop must be at least 0")
    if update_baseline:
        settings = {"alpha": alpha or DEFAULT_ALPHA, "correction": correction or DEFAULT_CORRECTION,
                    "min_effect": min_effect}
        print(f"baseline written: {write_baseline(run, baseline, settings)}")
        return PASSED
    baseline_run, settings = read_baseline(baseline)
    alpha = alpha or settings.get("alpha", DEFAULT_ALPHA)
    correction = correction or settings.get("correction", DEFAULT_CORRECTION)
    if correction not in CORRECTIONS:
        raise UserError(f"{baseline} asks for correction {correction!r}; choose from {', '.join(CORRECTIONS)}")
    declared = min_effects({**settings.get("min_effect", {}), **min_effect})
    record, samples = read_run(run)
    check_scored(record, samples, str(run))
    rows = compare(baseline_run, (record, samples), alpha=alpha, correction=correction,
                   max_drop={name: max_drop for name in SYSTEMS_FIGURES}, min_effect=declared,
                   systems=not quality_only)
    print_gate(rows, f"{run} against {baseline} (alpha {alpha}, {correction} correction)")
    code = exit_code(rows, allow_incomparable)
    counts = {verdict: sum(row["verdict"] == verdict for row in rows)
              for verdict in ("regressed", "not comparable", "underpowered")}
    summary = ", ".join(f"{count} {verdict}" for verdict, count in counts.items() if count)
    print({PASSED: "gate passed", REGRESSED: "gate failed: regressed",
           NOT_COMPARABLE: "gate failed: not comparable (--allow-incomparable if the change is deliberate)",
           UNDERPOWERED: "gate failed: underpowered (the comparison could not see a declared drop)"}[code]
          + (f" ({summary})" if summary else ""))
    return code
