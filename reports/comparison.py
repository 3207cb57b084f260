"""The paired comparison that opens a report of several runs: each run against the first, task by task.

The rows are harness/gate/compare.py's, computed by harness/commands/report.py and handed over as plain data:
reports read run records only and never import the gate. A comparison is (reference label, run label, rows), each
row a dict with task, metric, role, n, baseline, run, difference, interval, correlation, p_adjusted, mde, verdict
and reason.

Primary rows come first: a task's first metric, or a pooled group's over all its members' documents, which are
the report's headline (top-level) tasks and groups. The secondary rows (other metrics, members of a pooled group,
such as each MMLU subject) follow. CSV keeps the numbers as they are; Markdown and HTML show them readably.
"""

from __future__ import annotations

import math

import pandas as pd

ROLES = ("primary", "secondary", "systems")
# The CSV's columns: raw numbers, so that a script can read them back.
COLUMNS = ["reference", "run", "task", "metric", "role", "n", "reference value", "run value", "difference",
           "ci95_low", "ci95_high", "correlation", "p_adjusted", "mde", "verdict", "reason"]
# What Markdown and HTML show; the reference is named in the section's title.
SHOWN = ["run", "task", "metric", "role", "n", "reference value", "run value", "difference [95 % CI]",
         "correlation", "p adjusted", "MDE", "verdict", "reason"]
# The numeric columns of SHOWN and the raw value each sorts by in the HTML table (reports/render.py).
SORTED_BY = {"n": "n", "reference value": "reference value", "run value": "run value",
             "difference [95 % CI]": "difference", "correlation": "correlation", "p adjusted": "p_adjusted",
             "MDE": "mde"}
# The verdicts worth a reader's eye, as CSS classes of report.html.j2; "pass" stays unmarked.
VERDICT_CLASSES = {"regressed": "regressed", "improved": "improved", "not comparable": "attention",
                   "underpowered": "attention"}


def comparison_frame(comparisons: list[tuple[str, str, list[dict]]]) -> pd.DataFrame:
    """One row per run, task and metric: each comparison's primary rows, then its secondary ones (then systems
    figures, if it has any), in the order the runs were given."""
    rows = []
    for reference, run, compared in comparisons:
        ordered = sorted(compared, key=lambda row: ROLES.index(row["role"]) if row["role"] in ROLES else len(ROLES))
        for row in ordered:
            interval = row.get("interval") or (None, None)
            rows.append({"reference": reference, "run": run, "task": row["task"], "metric": row["metric"],
                         "role": row["role"], "n": row.get("n"), "reference value": row.get("baseline"),
                         "run value": row.get("run"), "difference": row.get("difference"),
                         "ci95_low": interval[0], "ci95_high": interval[1], "correlation": row.get("correlation"),
                         "p_adjusted": row.get("p_adjusted"), "mde": row.get("mde"), "verdict": row.get("verdict"),
                         "reason": row.get("reason") or ""})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["n"] = frame["n"].astype("Int64")  # a count stays "200" in the CSV beside a row without one
    return frame


def missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value) -> str:
    """Four significant digits; an infinite MDE (no change was detectable) reads "none"."""
    if missing(value):
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "none"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e6:
        return str(int(value))  # n, read back from a CSV-like float column
    return f"{value:.4g}"


def difference(row: pd.Series) -> str:
    """"+0.0123 [-0.01, 0.03]": the run's value minus the reference's, with its 95 % interval."""
    if missing(row["difference"]):
        return "—"
    shown = f"{row['difference']:+.4g}"
    if missing(row["ci95_low"]) or missing(row["ci95_high"]):
        return shown
    return f"{shown} [{number(row['ci95_low'])}, {number(row['ci95_high'])}]"


def shown_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The comparison as text, for Markdown and HTML."""
    frame = frame.astype(object).where(frame.notna(), None)
    rows = [{"run": row["run"], "task": row["task"], "metric": row["metric"], "role": row["role"],
             "n": number(row["n"]), "reference value": number(row["reference value"]),
             "run value": number(row["run value"]), "difference [95 % CI]": difference(row),
             "correlation": number(row["correlation"]), "p adjusted": number(row["p_adjusted"]),
             "MDE": number(row["mde"]), "verdict": row["verdict"] or "—", "reason": row["reason"] or ""}
            for _, row in frame.iterrows()]
    return pd.DataFrame(rows, columns=SHOWN)
