"""Service-level objectives for a load run: `ttft<=500ms,tpot<=50ms` (any of ttft, tpot, itl, e2e; each bound in
ms or s). A request meets the SLO when it succeeded and each of its figures is within its bound; goodput is the
rate of such requests (DistServe's definition, as vLLM's benchmark_serving reports it)."""

from __future__ import annotations

import re

from harness.errors import UserError

METRICS = ("ttft", "tpot", "itl", "e2e")
TERM = re.compile(r"^(ttft|tpot|itl|e2e)\s*<=\s*([0-9]*\.?[0-9]+)\s*(ms|s)$")


def parse_slo(text: str) -> dict[str, float]:
    """{metric: bound in seconds}; a malformed expression is a UserError naming the part that is wrong."""
    bounds: dict[str, float] = {}
    for term in [t.strip() for t in text.split(",")]:
        match = TERM.match(term)
        if not match:
            raise UserError(f"--slo: {term!r} is not METRIC<=BOUND (METRIC one of {', '.join(METRICS)}; BOUND like "
                            f"500ms or 2s), e.g. ttft<=500ms,tpot<=50ms")
        metric, value, unit = match.groups()
        if metric in bounds:
            raise UserError(f"--slo: {metric} is bounded twice")
        seconds = float(value) / (1000.0 if unit == "ms" else 1.0)
        if seconds <= 0:
            raise UserError(f"--slo: {term!r} bounds {metric} at zero")
        bounds[metric] = seconds
    return bounds


def meets(record: dict, bounds: dict[str, float]) -> bool:
    """Whether one request's record (harness/load/client.py) meets every bound. A figure a request cannot have
    (tpot and itl of a one-token answer) does not count against it; itl is bounded at its worst gap."""
    if record["error"] is not None:
        return False
    for metric, bound in bounds.items():
        value = max(record["itl"], default=None) if metric == "itl" else record[metric]
        if value is not None and value > bound:
            return False
    return True


def describe(bounds: dict[str, float]) -> str:
    return ",".join(f"{metric}<={seconds * 1000:g}ms" for metric, seconds in bounds.items())
