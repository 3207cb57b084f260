"""Kill a real run part-way with SIGKILL, resume it, and compare with the same run never interrupted (issue 9).

With the default commit sizes, on MMLU 5-shot (abstract_algebra, anatomy, astronomy) and the real SmolLM2: the run
is killed once the first subject's responses are committed, then `harness run --resume` finishes it. Prints what
was stored, what the resume reused and computed, the wall times, and whether every sample scores the same.

    .venv/bin/python bench/kill_resume.py
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMAND = ["run", "--model", "smollm2-135m", "--tasks", "mmlu_abstract_algebra,mmlu_anatomy,mmlu_astronomy",
           "--num-fewshot", "5"]
FIRST_SUBJECT = 100 * 4  # abstract_algebra's requests


def stored(cache: Path) -> int:
    try:
        connection = sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=30)
        return connection.execute("SELECT count(*) FROM responses").fetchone()[0]
    except sqlite3.Error:
        return 0


def harness(arguments: list[str], cache: Path) -> tuple[subprocess.Popen, float]:
    env = {**os.environ, "HARNESS_CACHE_DB": str(cache)}
    return subprocess.Popen([sys.executable, "-m", "harness", *arguments], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL), time.perf_counter()


def finish(process: subprocess.Popen, started: float) -> float:
    assert process.wait() == 0
    return time.perf_counter() - started


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="kill-resume-"))
    whole, seconds_whole = work / "whole", 0.0
    process, started = harness([*COMMAND, "--output", str(whole)], work / "whole.sqlite")
    seconds_whole = finish(process, started)

    cache, folder = work / "killed.sqlite", work / "killed"
    process, started = harness([*COMMAND, "--output", str(folder)], cache)
    while stored(cache) < FIRST_SUBJECT:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    seconds_killed, kept = time.perf_counter() - started, stored(cache)
    process, started = harness(["run", "--resume", str(folder)], cache)
    seconds_resumed = finish(process, started)

    record = json.loads((folder / "results.json").read_text())
    use = record["settings"]["response_cache"]
    scores = lambda run: [json.loads(line)["scores"] for line in (run / "samples.jsonl").open()]  # noqa: E731
    same = scores(folder) == scores(whole)
    print(f"uninterrupted: {seconds_whole:.1f} s")
    print(f"killed after {seconds_killed:.1f} s with {kept} responses stored; resumed in {seconds_resumed:.1f} s, "
          f"reusing {sum(use['hits'].values())} and computing {sum(use['computed'].values())}")
    print(f"every sample scores as in the uninterrupted run: {same}; results equal: "
          f"{record['results'] == json.loads((whole / 'results.json').read_text())['results']}")


if __name__ == "__main__":
    main()
