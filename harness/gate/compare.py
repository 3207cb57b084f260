"""Two runs compared task by task and metric by metric, paired by document: what `harness compare` prints and what
`harness gate` decides on.

Each row: {"task", "metric", "role", "n", "baseline", "run", "difference", "interval", "correlation", "p_value",
"p_adjusted", "test", "mde", "min_effect", "verdict", "reason"}. The statistics of one row are harness/gate/paired.py.

Roles, and why (a family of tests is corrected together, harness/gate/multiplicity.py):
  primary    one test per question the comparison asks: a task's first metric, or a pooled group's (MMLU) over all
             its members' documents. Metrics computed from the same responses (WikiText's three perplexities from
             one set of log-likelihoods, GSM8K's two answer extractions) are one question, not several.
  secondary  a task's other metrics, and the members of a pooled group: reported with their own correction among
             themselves, informative, but the gate does not fail on them.
  systems    speed and memory, single measurements without a per-document spread, gated by a relative threshold
             (max_drop) and only on the same hardware.

A quality row regresses when it got worse, its adjusted p-value is below alpha, and the change exceeds
NUMERICAL_TOLERANCE of the baseline: the same fp32 model on another CPU (other SIMD kernels) moves perplexity by
about 1e-6 relative, consistently across documents, which a paired test would otherwise call significant. 1e-4 is
the tolerance we hold our fp32 logits to against transformers; one answer in a thousand flipped is 1e-3.

The MDE of a row is computed at the level its family's smallest p-value is held to, alpha / m (Holm's first step,
and BH's): what the gate could have seen with all its tests in place. A row whose declared min_effect is smaller
than its MDE reads "underpowered" when nothing regressed: the comparison could not have seen the drop it is
there to catch.
"""

from __future__ import annotations

from typing import Any

from harness.gate import comparability
from harness.gate.multiplicity import adjust
from harness.gate.paired import compare_paired, minimum_detectable_effect

NUMERICAL_TOLERANCE = 1e-4
# Systems figures the gate reads from results.json "systems", as (path under "systems", higher is better).
SYSTEMS_FIGURES = {
    "prefill.tokens_per_s": (("run", "prefill", "tokens_per_s"), True),
    "decode.tokens_per_s": (("run", "decode", "tokens_per_s"), True),
    "peak_rss_bytes": (("memory", "peak_rss_bytes"), False),
}
DEFAULT_MAX_DROP = {name: 0.1 for name in SYSTEMS_FIGURES}
Record = tuple[dict, list[dict]]  # (results.json, samples) as harness.record.run_folder.read_run gives them


def empty_row(task: str, metric: str, role: str) -> dict[str, Any]:
    return {"task": task, "metric": metric, "role": role, "n": None, "baseline": None, "run": None,
            "difference": None, "interval": None, "correlation": None, "p_value": None, "p_adjusted": None,
            "test": None, "mde": None, "min_effect": None, "verdict": None, "reason": None}


def not_comparable(task: str, metric: str, role: str, reason: str) -> dict[str, Any]:
    return {**empty_row(task, metric, role), "verdict": "not comparable", "reason": reason}


def scores_by_task(samples: list[dict]) -> dict[str, dict[str, dict]]:
    """{task: {doc_id: scores}}, built once per run: a comparison looks every task up."""
    by_task: dict[str, dict[str, dict]] = {}
    for sample in samples:
        by_task.setdefault(sample["task"], {})[str(sample["doc_id"])] = sample["scores"]
    return by_task


def scores_by_document(by_task: dict[str, dict[str, dict]], tasks: list[str]) -> dict[str, dict]:
    """{"task/doc_id": scores} of the given tasks (a pooled group has several)."""
    return {f"{task}/{doc}": scores for task in tasks for doc, scores in by_task.get(task, {}).items()}


def leaves(results: dict, name: str) -> list[str]:
    """The tasks under a task or group name (groups may hold groups)."""
    members = results.get(name, {}).get("members")
    return [leaf for member in members for leaf in leaves(results, member)] if members else [name]


def below(results: dict, name: str) -> list[str]:
    """Every task and group inside a group, at any depth."""
    members = results.get(name, {}).get("members") or []
    return [inner for member in members for inner in (member, *below(results, member))]


def roles(results: dict) -> dict[str, tuple[str, str]]:
    """{task or group: (role of its first metric, role of the others)} for the rows of one comparison."""
    pooled = {name: set(leaves(results, name)) for name, values in results.items()
              if values.get("aggregation") == "pooled"}
    in_pooled_group = {inner for name in pooled for inner in below(results, name)}
    # A group whose tasks all belong to a larger group is a part of it (MMLU's four categories of its subjects).
    in_pooled_group |= {name for name, tasks in pooled.items() if any(tasks < other for other in pooled.values())}
    decided = {}
    for name, values in results.items():
        if "members" in values and values.get("aggregation") != "pooled":
            continue  # a macro average (GLUE) is not paired by document; its members are tested instead
        decided[name] = ("secondary" if name in in_pooled_group else "primary", "secondary")
    return decided


def metric_descriptions(record: dict, name: str) -> dict[str, dict]:
    """A task's metrics, or a pooled group's (its first member's)."""
    first_leaf = leaves(record["results"], name)[0]
    return record.get("tasks", {}).get(first_leaf, {}).get("metrics", {})


def quality_rows(baseline: tuple, run: tuple, name: str, first_role: str, other_role: str, seed: int) -> list[dict]:
    """The rows of one task or pooled group; baseline and run are (record, samples, scores_by_task(samples))."""
    baseline_record, run_record = baseline[0], run[0]
    metrics = metric_descriptions(baseline_record, name) or metric_descriptions(run_record, name)
    role_of = {metric: first_role if i == 0 else other_role for i, metric in enumerate(metrics)}
    if name not in run_record.get("results", {}) or name not in baseline_record.get("results", {}):
        where = "run" if name not in run_record.get("results", {}) else "baseline"
        return [not_comparable(name, metric, role_of[metric], f"not in the {where}") for metric in metrics]
    tasks = leaves(baseline_record["results"], name)
    reason = comparability.settings_difference(baseline_record, run_record)
    for task in tasks:
        reason = reason or comparability.task_difference(baseline_record.get("tasks", {}).get(task, {}),
                                                         run_record.get("tasks", {}).get(task, {}))
    if reason:
        return [not_comparable(name, metric, role_of[metric], reason) for metric in metrics]
    baseline_scores, run_scores = scores_by_document(baseline[2], tasks), scores_by_document(run[2], tasks)
    if set(baseline_scores) != set(run_scores):
        only_baseline = len(set(baseline_scores) - set(run_scores))
        only_run = len(set(run_scores) - set(baseline_scores))
        reason = f"different documents: {only_baseline} only in the baseline, {only_run} only in the run"
        return [not_comparable(name, metric, role_of[metric], reason) for metric in metrics]

    rows = []
    documents = sorted(baseline_scores)
    for metric, description in metrics.items():
        baseline_values = [baseline_scores[d].get(metric) for d in documents]
        run_values = [run_scores[d].get(metric) for d in documents]
        if not documents or any(v is None for v in baseline_values + run_values):
            rows.append(not_comparable(name, metric, role_of[metric], "per-sample values missing"))
            continue
        result = compare_paired(baseline_values, run_values, description.get("aggregation", "mean"), seed=seed)
        rows.append(paired_row(name, metric, role_of[metric], result, description.get("higher_is_better", True)))
    return rows


def paired_row(task: str, metric: str, role: str, result: dict, higher_is_better: bool) -> dict:
    """A row from harness.gate.paired.compare_paired's result, waiting for decide()."""
    row = empty_row(task, metric, role)
    row.update({key: result[key] for key in ("n", "baseline", "run", "difference", "interval", "correlation",
                                             "p_value", "test")})
    row["higher_is_better"] = higher_is_better
    row["_paired"] = result  # for the MDE, once the family's size is known
    return row


def systems_figure(record: dict, path: tuple[str, ...]):
    value = record.get("systems")
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def systems_row(name: str, baseline: Any, run: Any, max_drop: float, higher_is_better: bool) -> dict:
    """A systems figure regresses when it got worse by more than `max_drop` of the baseline (0.1: 10 %)."""
    row = {**empty_row("run", "systems:" + name, "systems"), "baseline": baseline, "run": run,
           "test": "relative-threshold"}
    if not isinstance(baseline, (int, float)) or not isinstance(run, (int, float)) or baseline <= 0:
        return {**row, "verdict": "not comparable", "reason": "figure not measured in both runs"}
    relative_change = (run - baseline) / baseline
    got_better_by = relative_change if higher_is_better else -relative_change
    verdict = "regressed" if got_better_by < -max_drop else "improved" if got_better_by > max_drop else "pass"
    return {**row, "difference": run - baseline, "relative_change": relative_change, "verdict": verdict}


def decide(rows: list[dict], alpha: float, correction: str, min_effect: dict[str, tuple[float, bool]]) -> None:
    """Adjusted p-values per role, then each quality row's verdict and MDE, in place."""
    for role in ("primary", "secondary"):
        family = [row for row in rows if row["role"] == role and row["verdict"] is None]
        tested = [row for row in family if row["p_value"] is not None]
        for row, adjusted in zip(tested, adjust([row["p_value"] for row in tested], correction)):
            row["p_adjusted"] = adjusted
        for row in family:
            paired = row.pop("_paired")
            row["mde"] = minimum_detectable_effect(paired, alpha / max(1, len(tested)))
            row["verdict"] = verdict(row, alpha)
            declared = min_effect.get(f"{row['task']}:{row['metric']}")
            if declared is not None:
                size, relative = declared
                row["min_effect"] = size * abs(row["baseline"]) if relative else size
                if row["verdict"] == "pass" and (row["mde"] is None or row["mde"] > row["min_effect"]):
                    row["verdict"] = "underpowered"
                    row["reason"] = "this comparison could not have seen the declared drop"
                elif row["verdict"] == "regressed" and abs(row["difference"]) < row["min_effect"]:
                    # Still a regression: the change is real (the test says so), only smaller than the drop the
                    # suite is sized to catch. Accepting it is a decision (a new baseline), not a tolerance.
                    row["reason"] = (f"a real change, smaller than the declared drop of {row['min_effect']:.4g}: "
                                     f"write a new baseline if it is deliberate")


def verdict(row: dict, alpha: float) -> str:
    if row["p_adjusted"] is None:
        row["reason"] = "the test gave no p-value (too few documents)"
        return "not comparable"
    if abs(row["difference"]) <= NUMERICAL_TOLERANCE * abs(row["baseline"]) or row["p_adjusted"] >= alpha:
        return "pass"
    got_worse = row["difference"] < 0 if row["higher_is_better"] else row["difference"] > 0
    return "regressed" if got_worse else "improved"


def compare(baseline: Record, run: Record, alpha: float = 0.05, correction: str = "holm",
            max_drop: dict[str, float] | None = None, min_effect: dict[str, tuple[float, bool]] | None = None,
            seed: int = 0, systems: bool = True) -> list[dict]:
    """The rows of every task and group in either run, then one per systems figure (task "run"). min_effect maps
    "task:metric" to (size, relative): the drop the comparison must be able to see (relative: a fraction of the
    baseline's value). systems=False leaves speed and memory out (a runner whose hardware is not the baseline's)."""
    max_drop = {**DEFAULT_MAX_DROP, **(max_drop or {})}
    baseline_results, run_results = baseline[0].get("results", {}), run[0].get("results", {})
    role_of = {**roles(run_results), **roles(baseline_results)}
    rows = []
    indexed = [(record, samples, scores_by_task(samples)) for record, samples in (baseline, run)]
    for name in dict.fromkeys([*baseline_results, *run_results]):
        if name in role_of:
            source = baseline if name in baseline_results else run
            if not metric_descriptions(source[0], name):
                continue
            rows.extend(quality_rows(*indexed, name, *role_of[name], seed=seed))
    decide(rows, alpha, correction, min_effect or {})
    for row in rows:
        row.pop("higher_is_better", None)

    if systems and ("systems" in baseline[0] or "systems" in run[0]):
        other_hardware = comparability.hardware_difference(baseline[0], run[0])
        for name, (path, higher_is_better) in SYSTEMS_FIGURES.items():
            if other_hardware:
                rows.append(not_comparable("run", "systems:" + name, "systems", other_hardware))
                continue
            rows.append(systems_row(name, systems_figure(baseline[0], path), systems_figure(run[0], path),
                                    max_drop[name], higher_is_better))
    return rows
