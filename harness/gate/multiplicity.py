"""Adjusted p-values for a family of tests, so that many comparisons do not raise false alarms by their number.

  holm  controls the family-wise error rate, the chance of any false alarm, at alpha (Holm 1979, Scand. J.
        Statist. 6:65): the i-th smallest p-value is multiplied by (m - i + 1), made non-decreasing, capped at 1.
  bh    controls the false discovery rate, the expected share of false alarms among the alarms, at alpha
        (Benjamini & Hochberg 1995, JRSS B 57:289): the i-th smallest p-value is multiplied by m / i, made
        non-increasing from the largest down, capped at 1. It has more power than Holm when many tests are real
        changes; it is valid for independent or positively dependent tests (Benjamini & Yekutieli 2001), which
        scores of one model on several subjects are.
A test is "significant" when its adjusted p-value is below alpha; that is the same decision as the step-down
(Holm) or step-up (BH) procedure.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

CORRECTIONS = ("holm", "bh")


def adjust(p_values: Sequence[float], method: str) -> list[float]:
    """Adjusted p-values in the input order."""
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; choose from {', '.join(CORRECTIONS)}")
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if method == "holm":
        adjusted = np.maximum.accumulate(ranked * (m - np.arange(m)))
    else:
        adjusted = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
    result = np.empty(m)
    result[order] = np.minimum(adjusted, 1.0)
    return [float(v) for v in result]
