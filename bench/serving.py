"""Benchmark: what continuous batching buys `harness serve`, and whether `harness load` keeps its schedule, in one
script on one machine (issue 23's targets).

    .venv/bin/python bench/serving.py [--model smollm2-135m] [--clients 8] [--requests 48] [--input-tokens 128]
                                      [--output-tokens 64] [--only batching,schedule] [--output FILE.json]

  batching   `harness serve --max-batch 8` against `--max-batch 1` (one sequence at a time), each its own process,
             loaded by `--clients` closed-loop clients with the same synthetic requests (exact input and output
             lengths): output tokens/s and p99 time to first token.   target: 4x the output tokens/s, p99 TTFT no worse
  schedule   open-loop Poisson arrivals at rates up to the batched server's closed-loop request throughput: the rate
             the sender sent at over its schedule's own rate, and its p99 lateness.   target: within 1 %

The servers run one at a time, on all cores; the load generator runs in this process. The machine is shared and
noisy: each ratio is one measurement, taken back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.load.runner import Target, run_at_concurrency, run_at_rate  # noqa: E402
from harness.load.workload import synthetic  # noqa: E402
from harness.models.registry import NAMED_FOLDERS  # noqa: E402
from harness.models.tokenizer import load_tokenizer  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    def __init__(self, model: str, max_batch: int):
        self.port = free_port()
        self.process = subprocess.Popen([sys.executable, "-m", "harness", "serve", "--model", model, "--port",
                                         str(self.port), "--max-batch", str(max_batch), "--max-queued", "4096"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}/v1"
        deadline = time.monotonic() + 600
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"harness serve --max-batch {max_batch} did not start")
            time.sleep(0.2)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(timeout=60)


def batching(model: str, workload, clients: int, requests: int) -> dict:
    figures = {}
    for max_batch in (clients, 1):
        with ServerProcess(model, max_batch) as server:
            target = Target(server.url, model, None, 3600.0)
            run_at_concurrency(target, workload, clients, clients, {})  # warm-up: first calls, allocator
            summary, _ = run_at_concurrency(target, workload, clients, requests, {})
        figures[max_batch] = summary
        print(f"  --max-batch {max_batch}: {summary['output_token_throughput']:.1f} output tok/s, "
              f"{summary['request_throughput']:.3f} req/s, p99 TTFT {summary['ttft_p99_s']:.2f} s, "
              f"p50 TPOT {summary['tpot_p50_s'] * 1000:.0f} ms", flush=True)
    batched, single = figures[clients], figures[1]
    ratio = batched["output_token_throughput"] / single["output_token_throughput"]
    print(f"  batching: {ratio:.2f}x the output tokens/s (target 4x); p99 TTFT {batched['ttft_p99_s']:.2f} s "
          f"against {single['ttft_p99_s']:.2f} s (target: no worse)")
    return {"batched": batched, "one_at_a_time": single, "output_throughput_ratio": ratio,
            "ttft_p99_no_worse": batched["ttft_p99_s"] <= single["ttft_p99_s"]}


def schedule(model: str, workload, clients: int, requests: int) -> dict:
    rows = []
    with ServerProcess(model, clients) as server:
        target = Target(server.url, model, None, 3600.0)
        saturated, _ = run_at_concurrency(target, workload, clients, requests, {})
        top = saturated["request_throughput"]
        for share in (0.25, 0.5, 0.75, 1.0):
            summary, _ = run_at_rate(target, workload, share * top, requests, "poisson", 1.0, 0, {})
            kept = summary["sent_rate"] / summary["schedule_rate"]
            rows.append({"rate": share * top, "schedule_rate": summary["schedule_rate"],
                         "sent_rate": summary["sent_rate"], "sent_over_schedule": kept,
                         "lateness_p99_s": summary["send_lateness_p99_s"], "kept_schedule": summary["kept_schedule"],
                         "client_cpu_s_per_request": summary["client_cpu_s_per_request"]})
            print(f"  {share * top:.3f} req/s: sent {summary['sent_rate']:.4f} of the schedule's "
                  f"{summary['schedule_rate']:.4f} ({kept:.2%}), p99 lateness "
                  f"{summary['send_lateness_p99_s'] * 1000:.2f} ms", flush=True)
    return {"saturation_request_throughput": top, "rates": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--input-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--only", default="batching,schedule")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    tokenizer = load_tokenizer(NAMED_FOLDERS[args.model.split(":")[0]](print))
    workload = synthetic(tokenizer, args.requests, args.input_tokens, args.output_tokens, 0.0, seed=0)
    print(f"{args.model}: {workload.description}; {args.clients} clients, {args.requests} requests; "
          f"{os.cpu_count()} CPUs", flush=True)
    results = {"model": args.model, "clients": args.clients, "requests": args.requests,
               "workload": workload.description}
    for part in args.only.split(","):
        print(f"== {part}", flush=True)
        results[part] = {"batching": batching, "schedule": schedule}[part](args.model, workload, args.clients,
                                                                          args.requests)
    if args.output:
        args.output.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
