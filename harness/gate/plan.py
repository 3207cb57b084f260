"""How many documents a gate needs to catch a declared drop with 80 % power, and what they cost: `harness plan`.

For each declared TASK:METRIC=SIZE (a task or a pooled group), from the baseline's per-document scores:

  binary scores   Connor's (1987, Biometrics 43:207) sample size for McNemar's test, the inverse of the power
                  harness/gate/paired.py uses: n = ((z_{1-a/2} sqrt(c + d) + z_{power} sqrt(c + d - d^2)) / d)^2
                  for a drop d (a fraction of answers flipped one way) on top of a churn c (answers flipped both
                  ways by a harmless change). c comes from a reference run of such a change (--reference: two runs
                  that should score the same, e.g. the int8 variant), or --churn.
  other scores    n = ((z_{1-a/2} + z_{power}) * s / d)^2, s the standard deviation of the per-document paired
                  differences (Miller 2024, eq. 9). A drop in perplexity is d = log(1 + SIZE) in log-perplexity per
                  token of weight; s = cv * d, with cv the coefficient of variation of the per-document changes a
                  real change shows (--reference, or --cv: 1 when no reference is given).

The level is alpha / m, m the gate's primary tests (the baseline's tasks and pooled groups, at least the declared
metrics): the level Holm holds the smallest p-value to. A drop is out
of reach when the baseline cannot lose it (an accuracy of 0.02 cannot drop by 0.05) or when the task has fewer
documents than needed. The cost is the baseline's own seconds per document (results.json systems.tasks wall_s).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from harness.gate.compare import leaves, metric_descriptions, roles
from harness.gate.paired import NORMAL, POWER, compare_paired, fewest_flips


def binary_documents(drop: float, churn: float, alpha: float, power: float = POWER) -> int:
    z_alpha, z_power = NORMAL.inv_cdf(1 - alpha / 2), NORMAL.inv_cdf(power)
    discordant = churn + drop
    n = ((z_alpha * math.sqrt(discordant) + z_power * math.sqrt(discordant - drop * drop)) / drop) ** 2
    return max(math.ceil(n), math.ceil(fewest_flips(alpha) / drop))


def normal_documents(cv: float, alpha: float, power: float = POWER) -> int:
    return max(2, math.ceil(((NORMAL.inv_cdf(1 - alpha / 2) + NORMAL.inv_cdf(power)) * cv) ** 2))


def per_document_scores(record: dict, samples: list[dict], name: str, metric: str) -> dict[str, Any]:
    wanted = set(leaves(record["results"], name))
    return {f"{s['task']}/{s['doc_id']}": s["scores"].get(metric) for s in samples if s["task"] in wanted}


def limit_for(sizes: list[int], needed: int) -> int | None:
    """The smallest per-task --limit L whose documents, sum of min(L, size) over the group's tasks, reach needed."""
    if sum(sizes) < needed:
        return None
    low, high = 1, max(sizes)
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if sum(min(middle, s) for s in sizes) < needed else (low, middle)
    return low


def plan_row(baseline: tuple[dict, list[dict]], key: str, size: float, relative: bool, alpha: float, churn: float,
             cv: float, reference: tuple[dict, list[dict]] | None) -> dict:
    record, samples = baseline
    name, metric = key.split(":", 1)
    row: dict[str, Any] = {"task": name, "metric": metric, "baseline": None, "drop": None, "noise": None,
                           "documents": None, "available": None, "limit": None, "minutes": None, "status": None}
    if name not in record.get("results", {}) or metric not in metric_descriptions(record, name):
        return {**row, "status": f"{key} is not in the baseline"}
    description = metric_descriptions(record, name)[metric]
    tasks = leaves(record["results"], name)
    value = record["results"][name][metric]
    drop = size * abs(value) if relative else size
    scores = per_document_scores(record, samples, name, metric)
    sizes = [record["tasks"][task].get("docs_total", 0) for task in tasks]
    wall = sum(record.get("systems", {}).get("tasks", {}).get(task, {}).get("wall_s") or 0 for task in tasks)
    row.update({"baseline": value, "drop": drop, "available": sum(sizes)})
    binary = description.get("aggregation") == "mean" and all(v in (0, 1) for v in scores.values())
    reference_scores = per_document_scores(*reference, name, metric) if reference else {}
    common = sorted(set(scores) & set(reference_scores))
    if binary:
        room = value if description.get("higher_is_better", True) else 1 - value
        if room < drop:
            return {**row, "status": f"cannot be caught: the baseline scores {value:.3g}, it cannot lose {drop:.3g}"}
        if common:
            churn = compare_paired([scores[d] for d in common], [reference_scores[d] for d in common], "mean")["churn"]
        row["noise"] = f"churn {churn:.3f}" + (f" (reference, {len(common)} documents)" if common else " (given)")
        needed = binary_documents(drop, churn, alpha)
    else:
        if description.get("aggregation") in ("weighted_perplexity", "bits_per_byte") and common:
            base = np.array([scores[d] for d in common], dtype=np.float64)
            other = np.array([reference_scores[d] for d in common], dtype=np.float64)
            changes = (base[:, 0] - other[:, 0]) / base[:, 1]  # per-document change in loss per unit of weight
            if np.mean(changes) != 0:
                cv = float(np.std(changes, ddof=1) / abs(np.mean(changes)))
        row["noise"] = f"cv {cv:.3g}" + (f" (reference, {len(common)} documents)" if common else " (given)")
        needed = normal_documents(cv, alpha)
    seconds_per_document = wall / len(scores) if scores and wall else None
    row.update({"documents": needed, "limit": limit_for(sizes, needed),
                "minutes": needed * seconds_per_document / 60 if seconds_per_document else None})
    row["status"] = "ok" if row["limit"] else f"needs {needed} documents; {name} has {sum(sizes)}"
    return row


def plan(baseline: tuple[dict, list[dict]], declared: dict[str, tuple[float, bool]], alpha: float, churn: float,
         cv: float, reference: tuple[dict, list[dict]] | None = None) -> list[dict]:
    # The gate holds its smallest p-value to alpha / m, m its primary tests: the baseline's tasks and pooled groups.
    primaries = sum(role == "primary" for role, _ in roles(baseline[0].get("results", {})).values())
    level = alpha / max(1, len(declared), primaries)
    return [plan_row(baseline, key, size, relative, level, churn, cv, reference)
            for key, (size, relative) in declared.items()]
