"""Clean against perturbed, document by document: what `harness run --perturb` adds to the run record
("robustness"), one row per task and perturbation, and one pooling every task's documents when several ran.

Every row holds the clean and the perturbed score of the task's headline metric with their 95 % intervals, and the
paired difference with its interval and p-value (harness/gate/paired.py: McNemar's mid-p and Newcombe's interval
when both sides score each document 0 or 1, the paired bootstrap otherwise). Then, by perturbation:

  choices=permute  accuracy under each order, consistency (the same choice won under every order), and position
                   bias: the share of answers that went to each letter against the gold letters' share. The orders
                   are the rotations of the choices, so each question's gold choice stands once at every letter and
                   the gold share is exactly 1/n per letter; a model that chose by content alone would choose each
                   letter once per question too. The test is Hotelling's one-sample T^2 of the per-question letter
                   shares against 1/n (the questions are the independent units; Hotelling 1931; Anderson 2003,
                   "An Introduction to Multivariate Statistical Analysis", sec. 5.2), F-distributed with
                   (n - 1, N - n + 1) degrees of freedom.
  worst case       with two perturbations or more, one more row: each document's worst score over the clean
                   prompt and every perturbation (a perturbation's worst order or layout included), HELM's measure
                   of robustness (Liang et al. 2022, arXiv 2211.09110: the worst case over perturbations
                   of each instance), paired with the clean score like the others.
  format=variants  accuracy in each layout, their spread (best minus worst layout, FormatSpread's measure), and
                   whether the layouts differ at all: Cochran's Q test for right/wrong scores of the same questions
                   under k conditions (Cochran 1950, Biometrika 37:256), Friedman's test for other scores. The
                   spread gets no interval: the best and worst layouts are picked by the same data, so a bootstrap
                   of max - min is biased upward and its percentile interval can miss its own estimate.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from scipy.stats import chi2, friedmanchisquare
from scipy.stats import f as f_distribution

from harness import stats
from harness.gate.paired import compare_paired
from harness.robustness.perturbations import Perturbation
from harness.robustness.perturbed_task import layout_metric


def analyse(variants: list[tuple[str, str, Perturbation]], task_records: dict[str, dict], samples: list[dict],
            seed: int) -> list[dict]:
    """The robustness rows of a run: `variants` lists (clean task, its perturbed variant, the perturbation)."""
    scores: dict[str, dict[str, dict]] = defaultdict(dict)
    for sample in samples:
        scores[sample["task"]][str(sample["doc_id"])] = sample["scores"]
    rows = []
    for perturbation in dict.fromkeys(p for _, _, p in variants):
        pairs = [(clean, variant) for clean, variant, p in variants if p == perturbation]
        for clean, variant in pairs:
            rows.append(compare(clean, pairs=[(clean, variant)], perturbation=perturbation,
                                task_records=task_records, scores=scores, seed=seed))
        headlines = {headline(task_records[clean]) for clean, _ in pairs}
        if len(pairs) > 1 and len(headlines) == 1:  # pooled only where every task has the same headline metric
            rows.append(compare(f"all {len(pairs)} tasks", pairs=pairs, perturbation=perturbation,
                                task_records=task_records, scores=scores, seed=seed))
    perturbations = list(dict.fromkeys(p for _, _, p in variants))
    if len(perturbations) > 1:
        of_task: dict[str, list[tuple[str, Perturbation]]] = defaultdict(list)
        for clean, variant, perturbation in variants:
            of_task[clean].append((variant, perturbation))
        # Only where a document's scores are values to take the worst of (not GLUE's (gold, predicted) pairs).
        cleans = [clean for clean in of_task if headline(task_records[clean])[1] == "mean"]
        for clean in cleans:
            rows.append(worst_case(clean, [clean], of_task, task_records, scores, seed))
        if len(cleans) > 1 and len({headline(task_records[clean]) for clean in cleans}) == 1:
            rows.append(worst_case(f"all {len(cleans)} tasks", cleans, of_task, task_records, scores, seed))
    return rows


def headline(task_record: dict) -> tuple[str, str, bool]:
    name, metric = next(iter(task_record["metrics"].items()))
    return name, metric["aggregation"], metric["higher_is_better"]


def summary(values: list, aggregation: str, seed: int) -> dict:
    value, _, interval = stats.aggregate(aggregation, values, seed)
    return {"value": value, "ci95": None if interval is None else [interval[0], interval[1]]}


def compare(label: str, pairs: list[tuple[str, str]], perturbation: Perturbation, task_records: dict[str, dict],
            scores: dict[str, dict[str, dict]], seed: int) -> dict:
    metric, aggregation, higher_is_better = headline(task_records[pairs[0][0]])
    clean_rows, perturbed_rows = [], []
    for clean, variant in pairs:
        documents = [doc for doc in scores[clean] if doc in scores[variant]]
        clean_rows += [scores[clean][doc] for doc in documents]
        perturbed_rows += [scores[variant][doc] for doc in documents]
    clean_values = [row[metric] for row in clean_rows]
    perturbed_values = [row[metric] for row in perturbed_rows]
    paired = compare_paired(clean_values, perturbed_values, aggregation, seed)
    row: dict[str, Any] = {
        "task": label, "variants": [variant for _, variant in pairs], "perturbation": perturbation.name,
        "metric": metric, "higher_is_better": higher_is_better, "n": len(clean_values),
        "clean": summary(clean_values, aggregation, seed), "perturbed": summary(perturbed_values, aggregation, seed),
        "difference": {"value": paired["difference"], "ci95": paired["interval"], "p_value": paired["p_value"],
                       "test": paired["test"]},
    }
    if perturbation.kind == "choices":
        row.update(choice_order_effects(metric, perturbed_rows, seed))
    if perturbation.kind == "format":
        row.update(layout_effects(metric, perturbed_rows, seed))
    return row


def worst_case(label: str, cleans: list[str], of_task: dict[str, list[tuple[str, Perturbation]]],
               task_records: dict[str, dict], scores: dict[str, dict[str, dict]], seed: int) -> dict:
    metric, _, higher_is_better = headline(task_records[cleans[0]])
    pick = min if higher_is_better else max
    suffix = {"choices": "_every_order", "format": "_every_layout"}
    clean_values, worst_values = [], []
    for clean in cleans:
        for doc, clean_scores in scores[clean].items():
            values = [clean_scores[metric]] + [scores[variant][doc][metric + suffix.get(p.kind, "")]
                                               for variant, p in of_task[clean] if doc in scores[variant]]
            clean_values.append(values[0])
            worst_values.append(pick(values))
    paired = compare_paired(clean_values, worst_values, "mean", seed)
    return {
        "task": label, "variants": [variant for clean in cleans for variant, _ in of_task[clean]],
        "perturbation": f"worst of {len(of_task[cleans[0]])}", "metric": metric,
        "higher_is_better": higher_is_better, "n": len(clean_values),
        "clean": summary(clean_values, "mean", seed), "perturbed": summary(worst_values, "mean", seed),
        "difference": {"value": paired["difference"], "ci95": paired["interval"], "p_value": paired["p_value"],
                       "test": paired["test"]},
    }


def choice_order_effects(metric: str, rows: list[dict], seed: int) -> dict:
    orders = len(rows[0]["chosen"])
    chosen = np.array([row["chosen"] for row in rows])  # questions x orders: the winning position
    gold = np.array([row["gold"] for row in rows])
    letters = [chr(ord("A") + i) for i in range(orders)]
    return {
        "orders": [{"order": k, **summary([row[f"{metric}_order_{k}"] for row in rows], "mean", seed)}
                   for k in range(orders)],
        "consistency": summary([row["consistency"] for row in rows], "mean", seed),
        "every_order": summary([row[f"{metric}_every_order"] for row in rows], "mean", seed),
        "position_bias": position_bias(chosen, gold, letters),
    }


def position_bias(chosen: np.ndarray, gold: np.ndarray, letters: list[str]) -> dict:
    """Per letter the share of answers and of gold answers (with the chosen share's interval over questions), and
    Hotelling's T^2 test of the per-question chosen shares against the gold shares."""
    questions, orders = chosen.shape
    chosen_shares = np.stack([(chosen == i).mean(axis=1) for i in range(orders)], axis=1)  # questions x letters
    gold_shares = np.stack([(gold == i).mean(axis=1) for i in range(orders)], axis=1)
    per_letter = []
    for i, letter in enumerate(letters):
        value, _, interval = stats.aggregate("mean", chosen_shares[:, i].tolist())
        per_letter.append({"letter": letter, "gold_share": float(gold_shares[:, i].mean()), "chosen_share": value,
                           "ci95": None if interval is None else [interval[0], interval[1]],
                           "clean_chosen_share": float((chosen[:, 0] == i).mean()),
                           "clean_gold_share": float((gold[:, 0] == i).mean())})
    statistic, p_value, df = hotelling(chosen_shares[:, :-1] - gold_shares[:, :-1])
    return {"letters": per_letter, "test": "hotelling-t2", "statistic": statistic, "df": df, "p_value": p_value,
            "questions": questions}


def hotelling(differences: np.ndarray) -> tuple[float | None, float | None, list[int] | None]:
    """One-sample Hotelling T^2 of the rows of `differences` against a mean of 0: (T^2, p, [df1, df2]). The shares
    sum to 1, so one letter is left out. Where the covariance is singular (a letter never or always chosen), the
    test runs in the space the differences vary in; a mean off that space (a letter every question chose the same
    share of, not the gold share) is a bias no noise explains: p = 0."""
    n = differences.shape[0]
    mean = differences.mean(axis=0)
    if n < 2:
        return None, None, None
    covariance = np.atleast_2d(np.cov(differences, rowvar=False))
    values, vectors = np.linalg.eigh(covariance)
    kept = values > 1e-12 * max(1.0, float(values.max(initial=0.0)))
    outside = mean - vectors[:, kept] @ (vectors[:, kept].T @ mean)
    if np.abs(outside).max(initial=0.0) > 1e-9:
        return None, 0.0, None  # T^2 is infinite (JSON has no infinity)
    rank = int(kept.sum())
    if rank == 0 or n - rank < 1:
        return 0.0, 1.0, None
    projected = vectors[:, kept].T @ mean
    statistic = float(n * np.sum(projected ** 2 / values[kept]))
    f_value = statistic * (n - rank) / (rank * (n - 1))
    return statistic, float(f_distribution.sf(f_value, rank, n - rank)), [rank, n - rank]


def layout_effects(metric: str, rows: list[dict], seed: int) -> dict:
    layout_metrics = [name for name in rows[0] if name.startswith(layout_metric(metric, ""))]
    values = np.array([[row[name] for name in layout_metrics] for row in rows], dtype=np.float64)  # docs x layouts
    means = values.mean(axis=0)
    name = lambda index: layout_metrics[index].removeprefix(layout_metric(metric, ""))
    return {
        "layouts": [{"layout": name(i), **summary(values[:, i].tolist(), "mean", seed)}
                    for i in range(len(layout_metrics))],
        "every_layout": summary([row[f"{metric}_every_layout"] for row in rows], "mean", seed),
        "spread": {"value": float(np.ptp(means)), "best": name(int(np.argmax(means))),
                   "worst": name(int(np.argmin(means))), **layouts_differ(values)},
    }


def layouts_differ(values: np.ndarray) -> dict:
    """Whether k layouts scored the same questions differently: Cochran's Q for 0/1 scores, else Friedman's test."""
    questions, k = values.shape
    if np.isin(values, (0, 1)).all():
        rows, columns = values.sum(axis=1), values.sum(axis=0)
        denominator = k * rows.sum() - np.sum(rows ** 2)
        if denominator == 0:  # every question scored alike in every layout
            return {"test": "cochran-q", "statistic": 0.0, "p_value": 1.0}
        q = (k - 1) * (k * np.sum(columns ** 2) - rows.sum() ** 2) / denominator
        return {"test": "cochran-q", "statistic": float(q), "p_value": float(chi2.sf(q, k - 1))}
    if questions < 2 or np.ptp(values, axis=1).max() == 0:
        return {"test": "friedman", "statistic": 0.0, "p_value": 1.0}
    result = friedmanchisquare(*values.T)
    return {"test": "friedman", "statistic": float(result.statistic), "p_value": float(result.pvalue)}
