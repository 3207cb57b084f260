"""`harness gate` as CI runs it (exit 0 pass, 1 regressed, 2 bad input, 3 not comparable, 4 underpowered), and
`harness compare`."""

import json
import random
import subprocess
import sys


def write_run(folder, correct, tokens_per_s=500.0, version="1", task="mmlu_anatomy"):
    folder.mkdir(parents=True)
    identity = {"version": version, "prompt_hash": "abcd", "num_fewshot": 0,
                "metrics": {"acc": {"aggregation": "mean", "higher_is_better": True}}}
    record = {"created": "2026-11-23T00:00:00+00:00", "model": {"spec": "smollm2-135m", "fingerprint": "f" * 64},
              "tasks": {task: identity},
              "results": {task: {"n": len(correct), "acc": sum(correct) / len(correct)}},
              "systems": {"run": {"prefill": {"tokens_per_s": tokens_per_s}, "decode": {"tokens_per_s": 50.0}},
                          "memory": {"peak_rss_bytes": 1 << 30}}}
    (folder / "results.json").write_text(json.dumps(record))
    (folder / "samples.jsonl").write_text("".join(
        json.dumps({"task": task, "doc_id": str(i), "scores": {"acc": float(c)}}) + "\n"
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
    assert same.returncode == 0 and "gate passed" in same.stdout

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


def test_a_task_version_bump_fails_as_not_comparable_unless_allowed(tmp_path):
    correct = [i % 3 == 0 for i in range(300)]
    baseline = tmp_path / "baseline.json"
    assert gate("--run", write_run(tmp_path / "base", correct), "--baseline", baseline,
                "--update-baseline").returncode == 0
    bumped = write_run(tmp_path / "bumped", correct, version="2")
    result = gate("--run", bumped, "--baseline", baseline)
    assert result.returncode == 3 and "not comparable" in result.stdout and "version differs" in result.stdout
    assert gate("--run", bumped, "--baseline", baseline, "--allow-incomparable").returncode == 0


def test_a_declared_drop_the_comparison_cannot_see_fails_as_underpowered(tmp_path):
    """Thirty questions cannot show a three-point drop (the MDE is about 0.3); three hundred can show a fifteen-point
    one. The minimum effect is written into the baseline and read back by later gates."""
    small = [i % 3 == 0 for i in range(30)]
    baseline = tmp_path / "small.json"
    assert gate("--run", write_run(tmp_path / "base", small), "--baseline", baseline, "--update-baseline",
                "--min-effect", "mmlu_anatomy:acc=0.03").returncode == 0
    assert json.loads(baseline.read_text())["gate"]["min_effect"] == {"mmlu_anatomy:acc": "0.03"}
    blind = gate("--run", write_run(tmp_path / "same", small), "--baseline", baseline)
    assert blind.returncode == 4 and "underpowered" in blind.stdout

    large = [i % 3 == 0 for i in range(300)]
    assert gate("--run", write_run(tmp_path / "base300", large), "--baseline", tmp_path / "large.json",
                "--update-baseline", "--min-effect", "mmlu_anatomy:acc=50%").returncode == 0
    assert gate("--run", write_run(tmp_path / "same300", large), "--baseline", tmp_path / "large.json").returncode == 0


def test_bad_min_effect_and_unscored_runs_are_one_line_errors(tmp_path):
    run = write_run(tmp_path / "run", [True, False] * 10)
    baseline = tmp_path / "b.json"
    bad = gate("--run", run, "--baseline", baseline, "--update-baseline", "--min-effect", "acc=0.03")
    assert bad.returncode == 2 and "TASK:METRIC=SIZE" in bad.stderr and "Traceback" not in bad.stderr
    (run / "samples.jsonl").write_text('[1, 2]\n')
    unscored = gate("--run", run, "--baseline", baseline, "--update-baseline")
    assert unscored.returncode == 2 and "is not a scored sample" in unscored.stderr
    assert len(unscored.stderr.strip().splitlines()) == 1


def compare(*args):
    return subprocess.run([sys.executable, "-m", "harness", "compare", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_compare_prints_the_paired_difference_and_writes_its_rows(tmp_path):
    correct = [i % 2 == 0 for i in range(400)]
    worse = list(correct)
    for i in range(0, 80, 2):
        worse[i] = False  # 40 of 200 right answers lost
    output = tmp_path / "rows.json"
    result = compare(write_run(tmp_path / "a", correct), write_run(tmp_path / "b", worse), "--output", output)
    assert result.returncode == 0 and "regressed" in result.stdout
    [accuracy] = [row for row in json.loads(output.read_text()) if row["metric"] == "acc"]
    assert accuracy["difference"] == -0.1 and accuracy["test"] == "mcnemar-mid-p" and accuracy["mde"] < 0.05


def test_compare_of_runs_without_a_common_task_is_one_line_and_not_comparable(tmp_path):
    first = write_run(tmp_path / "a", [True, False] * 5)
    second = write_run(tmp_path / "b", [True, False] * 5, task="mmlu_astronomy")
    result = compare(first, second)
    assert result.returncode == 3 and "no task in common" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
