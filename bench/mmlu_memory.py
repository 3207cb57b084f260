"""Peak memory of `harness run --tasks mmlu` against the number of questions, up to the full 14,042 (issue 9).

Each size runs as its own `harness run` process, cache on as a user runs it (a scratch cache, so nothing is
reused), and the run record's peak RSS is read back. The model is a tiny random LLaMA (2 layers, hidden size 32)
with SmolLM2's real tokenizer: its weights take a few MB, so what grows is the harness's own memory (documents,
requests, prompts, responses, samples), which is what this measures. The real SmolLM2 would take about an hour for
the full MMLU here and add a constant.

    .venv/bin/python bench/mmlu_memory.py [--limits 1,10,50,all]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limits", default="1,10,50,all", help="questions per subject, comma-separated; all = no limit")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from harness.models.sources import smollm2_folder
    from tests.tiny import make_tiny_llama_folder

    work = Path(tempfile.mkdtemp(prefix="mmlu-memory-"))
    model = make_tiny_llama_folder(work / "tiny", smollm2_folder(), max_positions=2048)
    env = {**os.environ, "HARNESS_CACHE_DB": str(work / "responses.sqlite"),
           "HARNESS_RESULTS_DB": str(work / "results.sqlite")}
    rows = []
    for limit in args.limits.split(","):
        output = work / f"run-{limit}"
        command = [sys.executable, "-m", "harness", "run", "--model", f"hf:{model}", "--tasks", "mmlu",
                   "--output", str(output)] + ([] if limit == "all" else ["--limit", limit])
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        record = json.loads((output / "results.json").read_text())
        questions = sum(t["docs_evaluated"] for t in record["tasks"].values())
        rows.append({"limit": limit, "questions": questions, "requests": 4 * questions,
                     "peak_rss_mb": record["systems"]["memory"]["peak_rss_bytes"] / 2**20,
                     "samples_mb": (output / "samples.jsonl").stat().st_size / 2**20,
                     "wall_s": record["wall_seconds"]})
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    print(f"\n{'questions':>9} {'requests':>8} {'peak RSS MB':>11} {'growth MB':>9} {'samples.jsonl MB':>16} "
          f"{'growth / samples':>16} {'wall s':>7}")
    for row in rows:
        growth = row["peak_rss_mb"] - base["peak_rss_mb"]
        grown = row["samples_mb"] - base["samples_mb"]
        ratio = f"{growth / grown:.2f}" if grown > 0.01 else "-"
        print(f"{row['questions']:>9} {row['requests']:>8} {row['peak_rss_mb']:>11.0f} {growth:>9.0f} "
              f"{row['samples_mb']:>16.1f} {ratio:>16} {row['wall_s']:>7.0f}")
    print(f"\nrun folders in {work}")


if __name__ == "__main__":
    main()
