"""Load runs against an OpenAI-compatible endpoint: open loop at a rate (arrivals on a precomputed schedule) or
closed loop at a concurrency, a sweep over rates, and a search for the highest rate that meets an SLO.

Open loop: each request leaves at its scheduled absolute time, whatever the server does (a slow server makes
requests pile up in flight, not arrive later). Closed loop: `concurrency` clients each send their next request
when their last one ends. The prompts are the workload's, taken in order and reused from the start if the run
needs more.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from harness.load.client import send
from harness.load.schedule import arrival_times
from harness.load.summary import summarize

LEAD_S = 0.05  # the first arrival is this far after the schedule is laid out, so that it is not already late


@dataclass(frozen=True)
class Target:
    url: str  # the API root, ending in /v1
    model: str
    api_key: str | None
    timeout_s: float


@dataclass(frozen=True)
class Workload:
    """The bodies of the requests to send (prompt, max_tokens, and whatever else each needs), in order."""
    bodies: tuple[dict, ...]
    description: str


def client_for(target: Target, connections: int) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(headers=headers, limits=limits, timeout=httpx.Timeout(target.timeout_s))


def body(target: Target, workload: Workload, index: int) -> dict:
    return {"model": target.model, "temperature": 0, **workload.bodies[index % len(workload.bodies)]}


async def open_loop(target: Target, workload: Workload, times: list[float]) -> list[dict]:
    loop = asyncio.get_running_loop()
    async with client_for(target, connections=len(times)) as client:
        start = time.perf_counter() + LEAD_S
        tasks = []
        for index, offset in enumerate(times):
            delay = start + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(loop.create_task(send(client, target.url, body(target, workload, index), start + offset)))
        return list(await asyncio.gather(*tasks))


async def closed_loop(target: Target, workload: Workload, count: int, concurrency: int) -> list[dict]:
    records: list[dict] = []
    next_index = iter(range(count))
    async with client_for(target, connections=concurrency) as client:
        async def worker():
            for index in next_index:
                records.append(await send(client, target.url, body(target, workload, index), time.perf_counter()))
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return records


def run_at_rate(target: Target, workload: Workload, rate: float, count: int, arrival: str, burstiness: float,
                seed: int, slo: dict[str, float]) -> tuple[dict, list[dict]]:
    times = arrival_times(rate, count, arrival, burstiness, seed)
    cpu = time.process_time()
    records = asyncio.run(open_loop(target, workload, times))
    return summarize(records, rate, None, slo, time.process_time() - cpu), records


def run_at_concurrency(target: Target, workload: Workload, concurrency: int, count: int,
                       slo: dict[str, float]) -> tuple[dict, list[dict]]:
    cpu = time.process_time()
    records = asyncio.run(closed_loop(target, workload, count, concurrency))
    return summarize(records, None, concurrency, slo, time.process_time() - cpu), records


def highest_rate_meeting(run: Callable[[float], dict], low: float, high: float, attainment: float,
                         steps: int) -> tuple[float | None, list[dict]]:
    """Bisects for the highest rate whose run meets the SLO for at least `attainment` of its requests (and keeps
    its schedule, or the rate was not really tried), between `low` and `high` req/s, in `steps` runs after the two
    ends. Returns that rate (None if even `low` fails) and every run's summary."""
    tried: list[dict] = []

    def good(rate: float) -> bool:
        summary = run(rate)
        tried.append(summary)
        return summary["slo_attainment"] >= attainment and summary["kept_schedule"] is not False

    if not good(low):
        return None, tried
    if good(high):
        return high, tried
    for _ in range(steps):
        middle = (low + high) / 2
        low, high = (middle, high) if good(middle) else (low, middle)
    return low, tried
