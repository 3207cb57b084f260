"""One load run's figures, from its requests' records (harness/load/client.py): what vLLM's benchmark_serving and
guidellm report, plus whether the sender kept its schedule and what the sender itself cost.

Throughputs divide by the run's duration, from the first request sent to the last one finished. Percentiles are
numpy's (linear interpolation), over the requests that succeeded; itl pools every gap of every request.
"""

from __future__ import annotations

import numpy as np

from harness.load.schedule import schedule_rate
from harness.load.slo import meets

PERCENTILES = (50, 90, 99)
# The sender kept its schedule when it sent at least this share of the schedule's own rate and its p99 lateness
# stayed under a tenth of the mean gap between arrivals.
KEPT_RATE_SHARE = 0.99
KEPT_LATENESS_SHARE = 0.1


def summarize(records: list[dict], requested_rate: float | None, concurrency: int | None, slo: dict[str, float],
              client_cpu_s: float) -> dict:
    ok = [r for r in records if r["error"] is None]
    start = min(r["sent"] for r in records)
    end = max(r["sent"] + (r["e2e"] or 0.0) for r in records)
    duration = max(end - start, 1e-9)
    output_tokens = sum(r["output_tokens"] or 0 for r in ok)
    input_tokens = sum(r["input_tokens"] or 0 for r in ok)
    good = [r for r in records if meets(r, slo)] if slo else ok
    summary = {
        "requested_rate": requested_rate, "concurrency": concurrency, "requests": len(records),
        "completed": len(ok), "failed": len(records) - len(ok), "duration_s": duration,
        "request_throughput": len(ok) / duration, "input_token_throughput": input_tokens / duration,
        "output_token_throughput": output_tokens / duration, "total_input_tokens": input_tokens,
        "total_output_tokens": output_tokens,
        "slo_attainment": len(good) / len(records), "goodput": len(good) / duration,
    }
    for metric in ("ttft", "tpot", "e2e"):
        summary.update(_spread(metric, [r[metric] for r in ok if r[metric] is not None]))
    summary.update(_spread("itl", [gap for r in ok for gap in r["itl"]]))
    summary.update(_spread("header_delay", [r["header_delay"] for r in records if r.get("header_delay") is not None]))
    summary.update(_sender(records, requested_rate, client_cpu_s))
    summary["errors"] = sorted({r["error"] for r in records if r["error"]})[:5]
    return summary


def _spread(metric: str, values: list[float]) -> dict:
    if not values:
        return {f"{metric}_mean_s": None, **{f"{metric}_p{p}_s": None for p in PERCENTILES}}
    array = np.asarray(values)
    return {f"{metric}_mean_s": float(array.mean()),
            **{f"{metric}_p{p}_s": float(np.percentile(array, p)) for p in PERCENTILES}}


def _sender(records: list[dict], requested_rate: float | None, client_cpu_s: float) -> dict:
    """Whether the open-loop sender kept its schedule, and its own cost: how late each request left against its
    scheduled time, the rate it sent at against the schedule's own, and the client's CPU seconds per request."""
    lateness = np.asarray([r["sent"] - r["scheduled"] for r in records])
    figures = {"send_lateness_p50_s": float(np.percentile(lateness, 50)),
               "send_lateness_p99_s": float(np.percentile(lateness, 99)),
               "send_lateness_max_s": float(lateness.max()),
               "client_cpu_s_per_request": client_cpu_s / len(records)}
    if requested_rate is None:
        return {**figures, "schedule_rate": None, "sent_rate": None, "kept_schedule": None}
    drawn = schedule_rate(sorted(r["scheduled"] for r in records))
    sent = schedule_rate(sorted(r["sent"] for r in records))
    kept = None
    if drawn and sent:
        kept = bool(sent >= KEPT_RATE_SHARE * drawn and figures["send_lateness_p99_s"] <= KEPT_LATENESS_SHARE / drawn)
    return {**figures, "schedule_rate": drawn, "sent_rate": sent, "kept_schedule": kept}
