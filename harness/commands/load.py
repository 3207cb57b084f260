"""`harness load --url URL (--rate R,... | --concurrency C,... | --find-max-rate LOW:HIGH)`: a load test of an
OpenAI-compatible server (harness/load). Writes, in the output folder:

  - load.csv: one row per point (a rate or a concurrency): throughput, latency percentiles, SLO attainment,
    goodput, and whether the sender kept its schedule;
  - requests.jsonl: every request's record (times, tokens, error), with its point;
  - load.json: the settings, the points, and for --find-max-rate the highest rate found (harness/record/
    load_folder.py).

The run is also recorded in the results store, beside evaluation runs, and `harness report` charts it.
"""

from __future__ import annotations

import math
import sqlite3
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import httpx
import pandas as pd

import tasks
from harness.errors import UserError
from harness.load.runner import Target, highest_rate_meeting, run_at_concurrency, run_at_rate
from harness.load.slo import describe, parse_slo
from harness.load.workload import from_task, synthetic
from harness.models.registry import NAMED_FOLDERS, parse_spec
from harness.models.tokenizer import load_tokenizer
from harness.record.load_folder import write_load
from harness.record.run_folder import check_output_folder
from harness.record.store import ResultsStore

TABLE_COLUMNS = ["requested_rate", "concurrency", "completed", "failed", "request_throughput",
                 "output_token_throughput", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "e2e_p99_s",
                 "slo_attainment", "goodput", "sent_rate", "kept_schedule"]


def load_command(url: str, model: str | None, api_key: str | None, rates: list[float] | None,
                 concurrencies: list[int] | None, max_rate_range: tuple[float, float] | None, requests: int,
                 duration_s: float | None, arrival: str, burstiness: float, prompts: str, tokenizer: str | None,
                 input_tokens: int, output_tokens: int, length_spread: float, slo_text: str | None,
                 slo_attainment: float, search_steps: int, seed: int, timeout_s: float, output: Path,
                 results_db: Path | None) -> int:
    slo = parse_slo(slo_text) if slo_text else {}
    check_output_folder(output)  # before any request: a folder that cannot be written is known at once
    if max_rate_range and not slo:
        raise UserError("--find-max-rate searches for the highest rate that meets an SLO: give --slo")
    url = url.rstrip("/")
    model = model or served_model(url, api_key, timeout_s)
    count = max(requests, math.ceil(max(rates or [0]) * duration_s)) if duration_s else requests
    workload = make_workload(prompts, tokenizer or model, count, input_tokens, output_tokens, length_spread, seed)
    target = Target(url, model, api_key, timeout_s)
    print(f"load: {url} ({model}); {workload.description}; {count} requests a point"
          + (f"; SLO {describe(slo)}" if slo else ""), file=sys.stderr)

    points, records = [], []

    def at_rate(rate: float) -> dict:
        summary, recorded = run_at_rate(target, workload, rate, count, arrival, burstiness, seed, slo)
        return note(summary, recorded)

    def note(summary: dict, recorded: list[dict]) -> dict:
        points.append(summary)
        records.extend({"point": len(points) - 1, **record} for record in recorded)
        print(point_line(summary), file=sys.stderr, flush=True)
        return summary

    highest = None
    if rates:
        for rate in rates:
            at_rate(rate)
    elif concurrencies:
        for concurrency in concurrencies:
            note(*run_at_concurrency(target, workload, concurrency, count, slo))
    else:
        low, high = max_rate_range
        highest, _ = highest_rate_meeting(at_rate, low, high, slo_attainment, search_steps)
        print(f"highest rate meeting {describe(slo)} for {slo_attainment:.0%} of requests: "
              + (f"{highest:.3g} req/s" if highest else f"none (even {low:g} req/s fails)"), file=sys.stderr)
    write_load(output, points, records, {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "harness_version": metadata.version("harness"), "url": url, "model": model,
        "workload": workload.description, "arrival": arrival, "burstiness": burstiness,
        "requests_per_point": count, "seed": seed, "slo": describe(slo) if slo else None,
        "slo_attainment_target": slo_attainment, "highest_rate_meeting_slo": highest})
    print_table(points)
    try:  # the folder is the record; the store is an index of them, and failing it loses nothing
        store = ResultsStore(results_db)
        store.record_load(output)
        store.close()
    except (OSError, sqlite3.Error) as error:
        print(f"warning: the load run was not added to the results store: {error}", file=sys.stderr)
    print(f"results: {output}", file=sys.stderr)
    return 0


def served_model(url: str, api_key: str | None, timeout_s: float) -> str:
    """The first model the server lists; an unreachable server or a listing that is not one is a UserError."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        reply = httpx.get(f"{url}/models", headers=headers, timeout=min(timeout_s, 30))
        data = reply.json().get("data") if reply.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError) as error:
        raise UserError(f"--url {url}: cannot list its models ({type(error).__name__}: {error})") from None
    if not isinstance(data, list) or not data or not isinstance(data[0], dict) or not isinstance(data[0].get("id"), str):
        raise UserError(f"--url {url}: GET /models answered {reply.status_code} without a model; give --model")
    return data[0]["id"]


def make_workload(prompts: str, tokenizer_name: str, count: int, input_tokens: int, output_tokens: int,
                  spread: float, seed: int):
    if prompts != "synthetic":
        if prompts not in tasks.expand([prompts]):
            raise UserError(f"--prompts: unknown task {prompts!r}")
        try:
            return from_task(tasks.build(prompts), count)
        except ValueError as error:
            raise UserError(f"--prompts: {error}") from None
    spec = parse_spec(tokenizer_name) if tokenizer_name else None
    if spec is not None and spec.name in NAMED_FOLDERS:
        folder = NAMED_FOLDERS[spec.name](lambda message: print(message, file=sys.stderr))
    elif spec is not None and spec.path and spec.name != "openai":
        folder = Path(spec.path)
    else:
        raise UserError(f"synthetic prompts need the served model's tokenizer: give --tokenizer (an installed model "
                        f"or a folder); {tokenizer_name!r} is not one")
    return synthetic(load_tokenizer(folder), count, input_tokens, output_tokens, spread, seed)


def point_line(summary: dict) -> str:
    where = f"{summary['requested_rate']:g} req/s" if summary["requested_rate"] else \
        f"concurrency {summary['concurrency']}"
    ttft = summary["ttft_p99_s"]
    line = (f"  {where}: {summary['completed']}/{summary['requests']} ok, {summary['request_throughput']:.3g} req/s, "
            f"{summary['output_token_throughput']:.4g} output tok/s, p99 TTFT "
            f"{'-' if ttft is None else f'{ttft * 1000:.0f} ms'}, SLO met by {summary['slo_attainment']:.0%}")
    if summary["kept_schedule"] is False:
        line += (f"; the sender did not keep its schedule (sent {summary['sent_rate']:.3g} of "
                 f"{summary['schedule_rate']:.3g} req/s, p99 lateness {summary['send_lateness_p99_s'] * 1000:.1f} ms)")
    return line


def print_table(points: list[dict]) -> None:
    table = pd.DataFrame(points)
    shown = table[[c for c in TABLE_COLUMNS if c in table]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
