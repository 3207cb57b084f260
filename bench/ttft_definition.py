"""Benchmark: where `harness load`'s TTFT and guidellm's part, on guidellm's own mock server (no model, so neither
client's CPU slows the server): the two clients alternate, 8 streams, 48 requests of 128 input and 64 output tokens.
Prints each client's TTFT and, for ours, the header delay (send call to the first header write) and TTFT minus it,
which is where guidellm starts its clock (docs/serving.md).

    .venv/bin/python bench/ttft_definition.py [--guidellm /work/guidellm-venv/bin/guidellm] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serving import free_port, guidellm_run  # bench/serving.py

from harness.models.registry import NAMED_FOLDERS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guidellm", default="/work/guidellm-venv/bin/guidellm", help="guidellm 0.8's command")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    folder = NAMED_FOLDERS["smollm2-135m"](print)  # the tokenizer of the synthetic prompts, on both sides
    port = free_port()
    # Without --processor: guidellm 0.8.1's mock server cannot load the converted SmolLM2 tokenizer.
    mock = subprocess.Popen([args.guidellm, "mock-server", "--port", str(port), "--model", "smollm2-135m",
                             "--ttft-ms", "50", "--itl-ms", "5"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        assert mock.poll() is None and time.monotonic() < deadline, "guidellm's mock server did not start"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.5)
    scratch = Path(tempfile.mkdtemp(prefix="ttft-definition-"))
    try:
        for round_ in range(1, args.rounds + 1):
            theirs = guidellm_run(args.guidellm, url, "smollm2-135m", folder, "kind=concurrent,streams=8", 48, 128,
                                  64, scratch)
            print(f"round {round_}: guidellm TTFT p50 {theirs['ttft_p50_s'] * 1000:.1f} ms, output tok/s "
                  f"{theirs['output_token_throughput']:.1f}", flush=True)
            out = scratch / f"ours-{round_}"
            subprocess.run([sys.executable, "-m", "harness", "load", "--url", url, "--model", "smollm2-135m",
                            "--concurrency", "8", "--requests", "48", "--input-tokens", "128", "--output-tokens",
                            "64", "--tokenizer", "smollm2-135m", "--output", str(out), "--results-db",
                            str(scratch / "results.sqlite")], check=True, capture_output=True)
            records = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
            ttft = np.array([r["ttft"] for r in records])
            delay = np.array([r["header_delay"] for r in records])
            point = json.loads((out / "load.json").read_text())["points"][0]
            print(f"round {round_}: ours TTFT p50 {np.median(ttft) * 1000:.1f} ms, header delay p50 "
                  f"{np.median(delay) * 1000:.1f} ms, TTFT minus header delay p50 {np.median(ttft - delay) * 1000:.1f}"
                  f" ms, output tok/s {point['output_token_throughput']:.1f}", flush=True)
    finally:
        mock.terminate()
        mock.wait()


if __name__ == "__main__":
    main()
