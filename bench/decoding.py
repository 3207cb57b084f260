"""Benchmark: speculative decoding against plain decoding on real tasks, quality and speed, in one run on one machine.

    .venv/bin/python bench/decoding.py [--model smollm2-135m] [--batch-sizes 1,8]
                                       [--speculative ngram=3,k=4 --speculative draft=smollm2-135m:layers-8,k=3 ...]
                                       [--limits gsm8k=10,humaneval=5,truthfulqa_gen=20] [--markdown FILE]

Each configuration is a `harness run` of the tasks (greedy, --no-cache, so every answer is computed), in its own
process, at each batch size: plain decoding first, then each speculative form, then plain decoding again, so that
the two plain runs bound how much the machine drifted while the others ran. For each task the table gives request
latency (mean and p50, from the run's profiler), decode tokens/s, the ratio of each to the mean of the two plain
runs, the acceptance rate and tokens a target step, the task's headline metric, and whether every response is the
plain run's, text for text (greedy speculative decoding must not change one).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HARNESS = str(Path(sys.executable).with_name("harness"))
DEFAULT_SPECULATIVE = ["ngram=3,k=4", "draft=smollm2-135m:layers-8,k=3", "draft=smollm2-135m:int8,k=4"]
HEADLINE = {"gsm8k": "exact_match,flexible-extract", "humaneval": "pass@1", "truthfulqa_gen": "rougeL_acc"}


def run(model: str, limits: str, batch_size: int, speculative: str | None, folder: Path) -> dict:
    """One `harness run`; its per-task figures and responses."""
    tasks = ",".join(pair.split("=")[0] for pair in limits.split(","))
    command = [HARNESS, "run", "--model", model, "--tasks", tasks, "--limit", limits, "--batch-size", str(batch_size),
               "--no-cache", "--allow-code-execution", "--output", str(folder)]
    if speculative:
        command += ["--speculative", speculative]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    record = json.loads((folder / "results.json").read_text())
    samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    figures = {}
    for task, systems in record["systems"]["tasks"].items():
        latency = systems["request_latency_s"]["generate"]
        speculation = systems.get("speculation", {})
        figures[task] = {
            "latency_mean": latency["mean"], "latency_p50": latency["p50"],
            "decode_tok_s": systems["decode"]["tokens_per_s"], "tokens": systems["generated_tokens"],
            "acceptance": speculation.get("acceptance_rate"), "per_step": speculation.get("tokens_per_row_step"),
            "draft_share": speculation.get("draft_share"),
            "metric": record["results"][task].get(HEADLINE.get(task, "")),
            "responses": [(s["doc_id"], s["response"]) for s in samples if s["task"] == task]}
    return figures


def number(value, fmt: str) -> str:
    return "-" if value is None or isinstance(value, dict) else fmt.format(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--speculative", action="append", help=f"repeatable (default {DEFAULT_SPECULATIVE})")
    parser.add_argument("--limits", default="gsm8k=10,humaneval=5,truthfulqa_gen=20")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()
    forms = args.speculative or DEFAULT_SPECULATIVE
    lines = ["| batch | task | decoding | latency mean s | vs plain | latency p50 s | vs plain | decode tok/s | vs plain "
             "| accepted | tokens a step | draft time | metric | same responses |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    with tempfile.TemporaryDirectory() as scratch:
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            ways = [None, *forms, None]
            results = []
            for index, form in enumerate(ways):
                print(f"batch {batch_size}: {form or 'plain'} ...", file=sys.stderr, flush=True)
                results.append(run(args.model, args.limits, batch_size, form, Path(scratch) / f"{batch_size}-{index}"))
            first, last = results[0], results[-1]
            for task in first:
                plain = {key: (first[task][key] + last[task][key]) / 2
                         for key in ("latency_mean", "latency_p50", "decode_tok_s")}
                for form, result in zip(ways, results):
                    mine = result[task]
                    ratios = [mine[key] / plain[key] for key in ("latency_mean", "latency_p50", "decode_tok_s")]
                    lines.append(
                        f"| {batch_size} | {task} | {form or 'plain'} | {mine['latency_mean']:.2f} | {ratios[0]:.2f} | "
                        f"{mine['latency_p50']:.2f} | {ratios[1]:.2f} | {mine['decode_tok_s']:.1f} | {ratios[2]:.2f} | "
                        f"{number(mine['acceptance'], '{:.0%}')} | {number(mine['per_step'], '{:.2f}')} | "
                        f"{number(mine['draft_share'], '{:.0%}')} | {number(mine['metric'], '{:.3f}')} | "
                        f"{'yes' if mine['responses'] == first[task]['responses'] else 'NO'} |")
                print("\n".join(lines[-len(ways):]), flush=True)
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
