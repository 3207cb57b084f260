"""Benchmark: speculative decoding against plain decoding on real tasks, quality and speed, in one run on one machine.

    .venv/bin/python bench/decoding.py [--model smollm2-135m] [--batch-sizes 1,8]
                                       [--speculative ngram=3,k=4 --speculative draft=smollm2-135m:layers-8,k=3 ...]
                                       [--limits gsm8k=10,humaneval=5,truthfulqa_gen=20] [--markdown FILE]
                                       [--figure FILE.svg]
    .venv/bin/python bench/decoding.py --replot TABLE.md --figure FILE.svg   # the figure of a table written before

Each configuration is a `harness run` of the tasks (greedy, --no-cache, so every answer is computed), in its own
process, at each batch size: plain decoding first, then each speculative form, then plain decoding again, so that
the two plain runs bound how much the machine drifted while the others ran. For each task the table gives request
latency (mean and p50, from the run's profiler), decode tokens/s, the ratio of each to the mean of the two plain
runs, the acceptance rate and tokens a target step, the task's headline metric, and whether every response is the
plain run's, text for text (greedy speculative decoding must not change one).
"""

from __future__ import annotations

import argparse
import io
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


def latency_figure(table: str) -> str:
    """An SVG of the table's mean-latency ratios: a panel per batch size, a group of bars per task, a bar per
    speculative form; the line at 1 is plain decoding."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    rows = [(int(r[0]), r[1], r[2], float(r[4])) for r in rows if r[2] != "plain"]
    batches = sorted({r[0] for r in rows})
    tasks = list(dict.fromkeys(r[1] for r in rows))
    forms = list(dict.fromkeys(r[2] for r in rows))
    figure, panels = plt.subplots(1, len(batches), figsize=(4.2 * len(batches), 3.6), sharey=True, squeeze=False)
    width = 0.8 / len(forms)
    for panel, batch in zip(panels[0], batches):
        for number, form in enumerate(forms):
            ratios = {task: ratio for b, task, f, ratio in rows if b == batch and f == form}
            panel.bar([t + (number - (len(forms) - 1) / 2) * width for t in range(len(tasks))],
                      [ratios.get(task, 0) for task in tasks], width, label=form)
        panel.axhline(1.0, color="black", linewidth=0.8)
        panel.set_xticks(range(len(tasks)), tasks, fontsize=8)
        panel.set_title(f"batch {batch}", fontsize=9)
        panel.grid(axis="y", alpha=0.3)
    panels[0][0].set_ylabel("mean request latency / plain decoding's")
    panels[0][0].legend(fontsize=7)
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(figure)
    return buffer.getvalue()


def number(value, fmt: str) -> str:
    return "-" if value is None or isinstance(value, dict) else fmt.format(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--speculative", action="append", help=f"repeatable (default {DEFAULT_SPECULATIVE})")
    parser.add_argument("--limits", default="gsm8k=10,humaneval=5,truthfulqa_gen=20")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--figure", type=Path, help="also draw the latency ratios as an SVG here")
    parser.add_argument("--replot", type=Path, help="draw --figure from a table written before, and run nothing")
    args = parser.parse_args()
    if args.replot:
        args.figure.write_text(latency_figure(args.replot.read_text()))
        return
    forms = args.speculative or DEFAULT_SPECULATIVE
    lines = [("| batch | task | decoding | latency mean s | vs plain | latency p50 s | vs plain | decode tok/s | vs plain "
              "| accepted | tokens a step | draft time | metric | same responses |"),
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
    if args.figure:
        args.figure.write_text(latency_figure(table))


if __name__ == "__main__":
    main()
