"""`harness gate` as CI runs it: exit 0 when nothing regressed, 1 when something did, 2 on bad input."""

import json
import random
import subprocess
import sys


def write_run(folder, correct, tokens_per_s=500.0):
    folder.mkdir(parents=True)
    identity = {"version": "1", "prompt_hash": "abcd", "num_fewshot": 0,
                "metrics": {"acc": {"aggregation": "mean", "higher_is_better": True}}}
    record = {"created": "2026-11-23T00:00:00+00:00", "model": {"spec": "smollm2-135m", "fingerprint": "f" * 64},
              "tasks": {"mmlu_anatomy": identity},
              "results": {"mmlu_anatomy": {"n": len(correct), "acc": sum(correct) / len(correct)}},
              "systems": {"run": {"prefill": {"tokens_per_s": tokens_per_s}, "decode": {"tokens_per_s": 50.0}},
                          "memory": {"peak_rss_bytes": 1 << 30}}}
    (folder / "results.json").write_text(json.dumps(record))
    (folder / "samples.jsonl").write_text("".join(
        json.dumps({"task": "mmlu_anatomy", "doc_id": str(i), "scores": {"acc": float(c)}}) + "\n"
        for i, c in enumerate(correct)))
    return folder


def gate(*args):
    return subprocess.run([sys.executable, "-m", "harness", "gate", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_gate_passes_noise_and_fails_a_real_drop(tmp_path):
    rng = random.Random(1234)
    correct = [rng.random() < 0.6 for _ in range(1000)]
    right = [i for i, c in enumerate(correct) if c]
    baseline = tmp_path / "leaderboards" / "baselines" / "smoke.json"
    assert gate("--run", write_run(tmp_path / "base", correct), "--baseline", baseline,
                "--update-baseline").returncode == 0
    assert json.loads(baseline.read_text())["format"] == "harness-baseline/1"

    same = gate("--run", write_run(tmp_path / "same", correct), "--baseline", baseline)
    assert same.returncode == 0 and "nothing regressed" in same.stdout

    noise = list(correct)
    for i in right[:3]:
        noise[i] = False
    assert gate("--run", write_run(tmp_path / "noise", noise), "--baseline", baseline).returncode == 0

    drop = list(correct)
    for i in right[:60]:
        drop[i] = False
    result = gate("--run", write_run(tmp_path / "drop", drop), "--baseline", baseline)
    assert result.returncode == 1 and "regressed" in result.stdout

    slow = gate("--run", write_run(tmp_path / "slow", correct, tokens_per_s=350.0), "--baseline", baseline)
    assert slow.returncode == 1  # a 30 % tokens/s drop


def test_a_file_of_another_format_is_refused(tmp_path):
    run = write_run(tmp_path / "run", [True, False])
    other = tmp_path / "results.json"
    other.write_text(json.dumps({"results": {}}))
    result = gate("--run", run, "--baseline", other)
    assert result.returncode == 2 and "is not a baseline of format harness-baseline/1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    missing = gate("--run", run, "--baseline", tmp_path / "nothing.json")
    assert missing.returncode == 2 and "--update-baseline" in missing.stderr
