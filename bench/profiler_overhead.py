"""Benchmark: the profiler's overhead on a WikiText run, measured in one process (this machine is noisy).

    .venv/bin/python bench/profiler_overhead.py [--docs 2] [--pairs 3]

Loads the default model once, then runs the same WikiText evaluation with and without the profiler, alternating
(without, with, without, with, ...) so that drift in the machine's speed falls on both sides, and prints each
run's wall time, the medians and their ratio. The target is under 2 % (issue 6).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tasks  # noqa: E402
from harness.engine.evaluator import evaluate  # noqa: E402
from harness.models.registry import load_model  # noqa: E402
from harness.systems.profiler import Profiler  # noqa: E402


def one_run(adapter, docs: int, profiled: bool) -> float:
    if not profiled:
        started = time.perf_counter()
        evaluate(adapter, [tasks.build("wikitext")], limit=docs, batch_size=1)
        return time.perf_counter() - started
    profiler = Profiler(adapter.device)
    started = time.perf_counter()
    profiler.start()
    with adapter.timed_by(profiler):
        evaluate(adapter, [tasks.build("wikitext")], limit=docs, batch_size=1)
    profiler.stop()
    profiler.summary()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    adapter = load_model("smollm2-135m", progress=lambda message: None)
    one_run(adapter, 1, profiled=False)  # warm-up
    plain, profiled = [], []
    for pair in range(args.pairs):
        plain.append(one_run(adapter, args.docs, profiled=False))
        profiled.append(one_run(adapter, args.docs, profiled=True))
        print(f"pair {pair + 1}: without {plain[-1]:.2f} s, with {profiled[-1]:.2f} s", flush=True)
    ratio = statistics.median(profiled) / statistics.median(plain)
    print(f"median without {statistics.median(plain):.2f} s, with {statistics.median(profiled):.2f} s: "
          f"overhead {100 * (ratio - 1):+.2f} % (target under 2 %)")


if __name__ == "__main__":
    main()
