"""When each request of an open-loop load run is sent: arrival times drawn once, before the run, from the rate and
the arrival process, so that the sender keeps to absolute times and cannot drift (a sender that sleeps a drawn gap
after each send falls behind by every send's own cost: vLLM issue 21104, a 200 req/s target that sends 183.5).

  - poisson: independent exponential gaps of mean 1/rate;
  - gamma: gamma-distributed gaps of mean 1/rate and shape `burstiness` (1 is Poisson; below 1 burstier, above
    1 more regular), as vLLM's benchmark_serving and guidellm draw them;
  - constant: a request every 1/rate seconds.
"""

from __future__ import annotations

import numpy as np

ARRIVALS = ("poisson", "gamma", "constant")


def arrival_times(rate: float, count: int, arrival: str, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """Seconds after the run's start at which each of `count` requests is sent; the first at 0."""
    if arrival == "constant":
        gaps = np.full(count, 1.0 / rate)
    else:
        shape = 1.0 if arrival == "poisson" else burstiness
        gaps = np.random.default_rng(seed).gamma(shape, 1.0 / (rate * shape), size=count)
    times = np.concatenate([[0.0], np.cumsum(gaps[:-1])]) if count else np.array([])
    return times.tolist()


def schedule_rate(times: list[float]) -> float | None:
    """The rate a drawn schedule itself has, (n - 1) / its span: what a sender that keeps it achieves. A Poisson
    schedule's own rate differs from the requested one by about 1/sqrt(n) relative (sampling, not the sender)."""
    if len(times) < 2 or times[-1] <= times[0]:
        return None
    return (len(times) - 1) / (times[-1] - times[0])
