"""The statistics of a regression gate: is a new run worse than a baseline run, beyond the noise?

Two runs are compared document by document, paired by (task, doc_id), because the same questions answered by both
runs make a far more sensitive comparison than two independent scores with their own standard errors.

  Accuracy-like metrics (per-sample values 0/1, aggregated by "mean") use McNemar's test (McNemar 1947,
  Psychometrika 12:153) on the discordant pairs: b documents the baseline got right and the run got wrong, c the
  other way round. Under "no change" each discordant pair is a fair coin, so when b + c < 25 the p-value is the
  exact two-sided binomial test, min(1, 2 * P(Binomial(b + c, 1/2) <= min(b, c))); from 25 on, the normal
  approximation is good and we use the chi-square with Edwards' continuity correction, (|b - c| - 1)^2 / (b + c)
  on 1 degree of freedom. (25 is the usual cut-off, e.g. statsmodels' and Rosner's advice.)
  The 95 % interval of the difference of means is a seeded paired percentile bootstrap over documents.

  Every other aggregate (perplexity from (loglikelihood, weight) pairs, bits per byte, pass@k per-problem values,
  correlations) uses Efron's bootstrap (Efron 1979, Ann. Statist. 7:1; Efron & Tibshirani 1993, ch. 13 and 16):
  documents are resampled with replacement, the same indices for both runs (paired), the aggregate of harness.stats
  is recomputed, and the 95 % interval is the 2.5th and 97.5th percentiles of the resampled differences. The
  two-sided p-value inverts the percentile interval: twice the share of resampled differences on the other side of
  zero from the observed one, with the +1 correction (k + 1) / (B + 1) of Davison & Hinkley 1997 (sec. 4.4) so that
  it is never reported as exactly 0.

  Systems figures (tokens/s, peak memory) are single measurements without a per-document spread, so they are gated
  by a relative threshold: a drop of more than `max_drop` (a fraction of the baseline) regresses. They are compared
  only between runs on the same hardware (CPU model, cores, threads, device, GPUs): a nightly job on another kind
  of machine than the baseline's gates quality and reports its speed as "not comparable".

  A quality difference smaller than NUMERICAL_TOLERANCE of the baseline value is float noise, not a change: the same
  fp32 model on another CPU (other SIMD kernels) moves perplexity by about 1e-6 relative, consistently across
  documents, which a paired bootstrap would otherwise call significant. 1e-4 is the tolerance we hold our fp32
  logits to against transformers; a real regression (one answer in a thousand flipped is 1e-3) is far above it.

A quality metric regresses only when it got worse AND p < alpha: a drop inside the noise passes. Runs that did not
evaluate the same documents, or whose task version, prompt hash or few-shot count differ, are "not comparable",
with the reason.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import stats as scipy_stats

from harness.stats import AGGREGATIONS

EXACT_BELOW = 25  # discordant pairs: below this McNemar's p-value is the exact binomial one
ITERATIONS = 2000
CONFIDENCE = 0.95
# Systems figures the gate reads from results.json "systems", as (path under "systems", higher is better).
SYSTEMS_FIGURES = {
    "prefill.tokens_per_s": (("run", "prefill", "tokens_per_s"), True),
    "decode.tokens_per_s": (("run", "decode", "tokens_per_s"), True),
    "peak_rss_bytes": (("memory", "peak_rss_bytes"), False),
}
DEFAULT_MAX_DROP = {name: 0.1 for name in SYSTEMS_FIGURES}
# What must be equal for speed and memory to be comparable (keys of results.json environment.hardware).
HARDWARE_IDENTITY = ("cpu_model", "logical_cores", "usable_cores", "torch_threads", "device", "gpus")
NUMERICAL_TOLERANCE = 1e-4


def percentile_interval(differences: np.ndarray) -> list[float]:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    return [float(low), float(high)]


def mcnemar_p_value(b: int, c: int) -> tuple[float, str]:
    """(two-sided p-value, which form) for b and c discordant pairs."""
    discordant = b + c
    if discordant == 0:
        return 1.0, "mcnemar-exact"
    if discordant < EXACT_BELOW:
        return float(min(1.0, 2 * scipy_stats.binom.cdf(min(b, c), discordant, 0.5))), "mcnemar-exact"
    statistic = (abs(b - c) - 1) ** 2 / discordant
    return float(scipy_stats.chi2.sf(statistic, df=1)), "mcnemar-chi2"


def paired_accuracy_test(baseline: Sequence[float], run: Sequence[float], seed: int = 0,
                         iterations: int = ITERATIONS) -> dict:
    """McNemar's test of 0/1 per-sample values paired by document (same order in both lists)."""
    baseline_values = np.asarray(baseline, dtype=np.float64)
    run_values = np.asarray(run, dtype=np.float64)
    if baseline_values.shape != run_values.shape or baseline_values.size == 0:
        raise ValueError("paired values need the same, non-zero number of documents")
    b = int(np.sum((baseline_values == 1) & (run_values == 0)))  # baseline right, run wrong
    c = int(np.sum((baseline_values == 0) & (run_values == 1)))  # baseline wrong, run right
    p_value, test = mcnemar_p_value(b, c)
    per_document = run_values - baseline_values
    picks = np.random.default_rng(seed).integers(0, per_document.size, size=(iterations, per_document.size))
    return {
        "baseline": float(baseline_values.mean()),
        "run": float(run_values.mean()),
        "difference": float(per_document.mean()),
        "interval": percentile_interval(per_document[picks].mean(axis=1)),
        "p_value": p_value,
        "test": test,
        "discordant": [b, c],
    }


def bootstrap_test(baseline_samples: Sequence[Any], run_samples: Sequence[Any], aggregation: str,
                   seed: int = 0, iterations: int = ITERATIONS, paired: bool = True) -> dict:
    """Bootstrap of aggregate(run) - aggregate(baseline). Paired: sample i of both lists is the same document and
    both are resampled with the same indices; otherwise each run is resampled on its own."""
    aggregate = AGGREGATIONS[aggregation]
    baseline_values = np.asarray(baseline_samples, dtype=np.float64)
    run_values = np.asarray(run_samples, dtype=np.float64)
    if paired and len(baseline_values) != len(run_values):
        raise ValueError("paired samples need the same number of documents")
    baseline_score, run_score = aggregate(baseline_values), aggregate(run_values)
    difference = run_score - baseline_score

    rng = np.random.default_rng(seed)
    resampled = []
    for _ in range(iterations):
        baseline_picks = rng.integers(0, len(baseline_values), size=len(baseline_values))
        run_picks = baseline_picks if paired else rng.integers(0, len(run_values), size=len(run_values))
        resampled.append(aggregate(run_values[run_picks]) - aggregate(baseline_values[baseline_picks]))
    differences = np.array(resampled, dtype=np.float64)
    differences = differences[np.isfinite(differences)]  # a degenerate resample (constant values) is left out
    if differences.size < 2 or not np.isfinite(difference):
        return {"baseline": baseline_score, "run": run_score, "difference": float(difference),
                "interval": None, "p_value": None, "test": "bootstrap"}

    # Percentile-interval inversion: the smallest two-sided level whose interval touches zero.
    other_side = np.sum(differences <= 0) if difference >= 0 else np.sum(differences >= 0)
    if difference == 0:
        other_side = min(np.sum(differences <= 0), np.sum(differences >= 0))
    p_value = min(1.0, 2 * (other_side + 1) / (differences.size + 1))
    return {
        "baseline": float(baseline_score),
        "run": float(run_score),
        "difference": float(difference),
        "interval": percentile_interval(differences),
        "p_value": float(p_value),
        "test": "paired-bootstrap" if paired else "bootstrap",
    }


def relative_threshold(baseline: float, run: float, max_drop: float, higher_is_better: bool) -> dict:
    """A systems figure regresses when it got worse by more than `max_drop` of the baseline (0.1: 10 %)."""
    result = {"baseline": baseline, "run": run, "difference": None, "relative_change": None,
              "interval": None, "p_value": None, "test": "relative-threshold"}
    if not isinstance(baseline, (int, float)) or not isinstance(run, (int, float)) or baseline <= 0:
        return {**result, "verdict": "not comparable", "reason": "figure not measured in both runs"}
    relative_change = (run - baseline) / baseline
    got_better_by = relative_change if higher_is_better else -relative_change
    if got_better_by < -max_drop:
        verdict = "regressed"
    elif got_better_by > max_drop:
        verdict = "improved"
    else:
        verdict = "pass"
    return {**result, "difference": run - baseline, "relative_change": relative_change, "verdict": verdict,
            "reason": None}


def quality_verdict(baseline: float, difference: float, p_value: float | None, higher_is_better: bool,
                    alpha: float) -> str:
    if p_value is None or not np.isfinite(difference):
        return "not comparable"
    if abs(difference) <= NUMERICAL_TOLERANCE * abs(baseline) or p_value >= alpha:
        return "pass"
    got_worse = difference < 0 if higher_is_better else difference > 0
    return "regressed" if got_worse else "improved"


def not_comparable(task: str, metric: str, reason: str) -> dict:
    return {"task": task, "metric": metric, "baseline": None, "run": None, "difference": None, "interval": None,
            "p_value": None, "verdict": "not comparable", "reason": reason}


def scores_by_document(samples: list[dict], task: str) -> dict[str, dict]:
    return {str(sample["doc_id"]): sample["scores"] for sample in samples if sample["task"] == task}


def compare_task(task: str, baseline: tuple[dict, list[dict]], run: tuple[dict, list[dict]], alpha: float,
                 seed: int) -> list[dict]:
    """One row per metric of one task present in both runs."""
    baseline_task, run_task = baseline[0]["tasks"][task], run[0]["tasks"][task]
    metrics = baseline_task.get("metrics", {})
    for field in ("version", "prompt_hash", "num_fewshot"):  # what decides whether the same test was taken
        if baseline_task.get(field) != run_task.get(field):
            reason = f"{field} differs: {baseline_task.get(field)!r} vs {run_task.get(field)!r}"
            return [not_comparable(task, metric, reason) for metric in metrics]
    baseline_scores, run_scores = scores_by_document(baseline[1], task), scores_by_document(run[1], task)
    if set(baseline_scores) != set(run_scores):
        only_baseline = len(set(baseline_scores) - set(run_scores))
        only_run = len(set(run_scores) - set(baseline_scores))
        reason = f"different documents: {only_baseline} only in the baseline, {only_run} only in the run"
        return [not_comparable(task, metric, reason) for metric in metrics]

    rows = []
    doc_ids = list(baseline_scores)
    for metric, description in metrics.items():
        aggregation = description.get("aggregation", "mean")
        higher_is_better = description.get("higher_is_better", True)
        baseline_values = [baseline_scores[d].get(metric) for d in doc_ids]
        run_values = [run_scores[d].get(metric) for d in doc_ids]
        if not doc_ids or any(v is None for v in baseline_values + run_values):
            rows.append(not_comparable(task, metric, "per-sample values missing"))
            continue
        binary = aggregation == "mean" and all(v in (0, 1) for v in baseline_values + run_values)
        if binary:
            result = paired_accuracy_test(baseline_values, run_values, seed=seed)
        else:
            result = bootstrap_test(baseline_values, run_values, aggregation, seed=seed)
        verdict = quality_verdict(result["baseline"], result["difference"], result["p_value"], higher_is_better, alpha)
        rows.append({"task": task, "metric": metric, "baseline": result["baseline"], "run": result["run"],
                     "difference": result["difference"], "interval": result["interval"],
                     "p_value": result["p_value"], "verdict": verdict, "test": result["test"],
                     "reason": None if verdict != "not comparable" else "the test gave no p-value"})
    return rows


def systems_figure(record: dict, path: tuple[str, ...]):
    value = record.get("systems")
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def compare(baseline: tuple[dict, list[dict]], run: tuple[dict, list[dict]], alpha: float = 0.05,
            max_drop: dict[str, float] | None = None, seed: int = 0) -> list[dict]:
    """Rows {"task", "metric", "baseline", "run", "difference", "interval", "p_value", "verdict", "reason", "test"}:
    one per (task, metric) of the baseline's tasks, then one per systems figure (task "run", metric "systems:...").
    `baseline` and `run` are (record, samples) as harness.record.run_folder.read_run gives them; max_drop is per systems figure name."""
    max_drop = {**DEFAULT_MAX_DROP, **(max_drop or {})}
    rows = []
    baseline_tasks, run_tasks = baseline[0].get("tasks", {}), run[0].get("tasks", {})
    for task in baseline_tasks:
        if task not in run_tasks:
            rows.extend(not_comparable(task, metric, "task not in the run")
                        for metric in baseline_tasks[task].get("metrics", {}))
            continue
        rows.extend(compare_task(task, baseline, run, alpha, seed))
    for task in run_tasks:
        if task not in baseline_tasks:
            rows.extend(not_comparable(task, metric, "task not in the baseline")
                        for metric in run_tasks[task].get("metrics", {}))

    if "systems" in baseline[0] or "systems" in run[0]:
        other_hardware = hardware_difference(baseline[0], run[0])
        for name, (path, higher_is_better) in SYSTEMS_FIGURES.items():
            if other_hardware:
                rows.append(not_comparable("run", "systems:" + name, other_hardware))
                continue
            result = relative_threshold(systems_figure(baseline[0], path), systems_figure(run[0], path),
                                        max_drop[name], higher_is_better)
            rows.append({"task": "run", "metric": "systems:" + name, **result})
    return rows


def hardware_difference(baseline: dict, run: dict) -> str | None:
    """Why speed and memory of the two records cannot be compared, or None when they ran on the same hardware.
    Records without a hardware context (written before the profiler existed) are taken at their word."""
    hardware = [record.get("environment", {}).get("hardware") for record in (baseline, run)]
    if not all(isinstance(h, dict) for h in hardware):
        return None
    for key in HARDWARE_IDENTITY:
        if hardware[0].get(key) != hardware[1].get(key):
            return f"other hardware: {key} {hardware[0].get(key)!r} vs {hardware[1].get(key)!r}"
    return None
