"""Benchmark: what continuous batching buys `harness serve`, and whether `harness load` keeps its schedule, in one
script on one machine (issue 23's targets).

    .venv/bin/python bench/serving.py [--model smollm2-135m] [--clients 8] [--requests 48] [--input-tokens 128]
                                      [--output-tokens 64] [--only batching,schedule] [--output FILE.json]

  batching   `harness serve --max-batch 8` against `--max-batch 1` (one sequence at a time), each its own process,
             loaded by `--clients` closed-loop clients with the same synthetic requests (exact input and output
             lengths): output tokens/s and p99 time to first token.   target: 4x the output tokens/s, p99 TTFT no worse
  schedule   open-loop Poisson arrivals at rates up to the batched server's closed-loop request throughput: the rate
             the sender sent at over its schedule's own rate, and its p99 lateness.   target: within 1 %
  peer       guidellm (PyPI, --guidellm BIN) and `harness load` one after the other on the same batched server and
             load (8 concurrent streams; then Poisson at half the saturation rate), same token lengths: output
             tokens/s, requests/s, TTFT and time per output token side by side, as ratios ours/theirs

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
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.load.runner import Target, run_at_concurrency, run_at_rate
from harness.load.workload import synthetic
from harness.models.registry import NAMED_FOLDERS
from harness.models.tokenizer import load_tokenizer


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


def guidellm_run(binary: str, url: str, model: str, folder: Path, profile: str, requests: int, input_tokens: int,
                 output_tokens: int, scratch: Path) -> dict:
    """One guidellm 0.8 run; its figures in our units. One worker process: guidellm 0.8.1's Poisson profile seeds
    every worker's generator alike and repeats each drawn gap once per worker (scheduler/strategies.py)."""
    output = scratch / f"guidellm-{profile.replace('=', '-').replace(',', '-')}.json"
    backend = f"kind=openai_http,target={url.removesuffix('/v1')},model={model},request_format=/v1/completions," \
              "stream=true"
    command = [binary, "run", "--backend", backend,
               "--profile", profile, "--constraint", f"kind=max_requests,count={requests}",
               "--tokenizer", f"kind=huggingface_auto,model={folder}",
               "--data", f"kind=synthetic_text,prompt_tokens={input_tokens},output_tokens={output_tokens}",
               "--output", f"kind=json,path={output}", "--disable-console-interactive"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env={**os.environ,
                                                                         "GUIDELLM__MAX_WORKER_PROCESSES": "1"})
    metrics = json.loads(output.read_text())["benchmarks"][0]["metrics"]
    ok = {name: metrics[name]["successful"] for name in metrics if isinstance(metrics[name], dict)
          and "successful" in metrics[name]}
    return {"completed": metrics["request_totals"]["successful"], "failed": metrics["request_totals"]["errored"],
            "output_token_throughput": ok["output_tokens_per_second"]["mean"],
            "request_throughput": ok["requests_per_second"]["mean"],
            "ttft_mean_s": ok["time_to_first_token_ms"]["mean"] / 1000,
            "ttft_p50_s": ok["time_to_first_token_ms"]["median"] / 1000,
            "ttft_p99_s": ok["time_to_first_token_ms"]["percentiles"]["p99"] / 1000,
            # guidellm's inter_token_latency is (last token - first token) / (output tokens - 1): our tpot.
            "tpot_mean_s": ok["inter_token_latency_ms"]["mean"] / 1000}


def peer(model: str, workload, clients: int, requests: int, guidellm: str, input_tokens: int,
         output_tokens: int) -> dict:
    folder = NAMED_FOLDERS[model.split(":")[0]](print)
    rows = {}
    with ServerProcess(model, clients) as server, tempfile.TemporaryDirectory() as scratch:
        target = Target(server.url, model, None, 3600.0)
        run_at_concurrency(target, workload, clients, clients, {})  # warm-up
        ours, _ = run_at_concurrency(target, workload, clients, requests, {})
        theirs = guidellm_run(guidellm, server.url, model, folder, f"kind=concurrent,streams={clients}", requests,
                              input_tokens, output_tokens, Path(scratch))
        rows["concurrent"] = (ours, theirs)
        rate = ours["request_throughput"] / 2
        ours_open, _ = run_at_rate(target, workload, rate, requests, "poisson", 1.0, 0, {})
        theirs_open = guidellm_run(guidellm, server.url, model, folder, f"kind=poisson,rate={rate:.4f}", requests,
                                   input_tokens, output_tokens, Path(scratch))
        rows[f"poisson {rate:.3f} req/s"] = (ours_open, theirs_open)
    table = {}
    for name, (ours, theirs) in rows.items():
        table[name] = {}
        for figure in ("output_token_throughput", "request_throughput", "ttft_mean_s", "ttft_p50_s", "ttft_p99_s",
                       "tpot_mean_s"):
            table[name][figure] = {"harness": ours[figure], "guidellm": theirs[figure],
                                   "ratio": ours[figure] / theirs[figure]}
            print(f"  {name}: {figure}: harness {ours[figure]:.4g}, guidellm {theirs[figure]:.4g} "
                  f"({ours[figure] / theirs[figure]:.3f}x)", flush=True)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--input-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--only", default="batching,schedule", help="any of batching,schedule,peer")
    parser.add_argument("--guidellm", default="/work/guidellm-venv/bin/guidellm",
                        help="guidellm 0.8's command, installed apart (pip install guidellm==0.8.1)")
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
        if part == "peer":
            results[part] = peer(args.model, workload, args.clients, args.requests, args.guidellm, args.input_tokens,
                                 args.output_tokens)
        else:
            results[part] = {"batching": batching, "schedule": schedule}[part](args.model, workload, args.clients,
                                                                              args.requests)
    if args.output:
        args.output.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
