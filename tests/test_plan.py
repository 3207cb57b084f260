"""`harness plan` (harness/gate/plan.py): the documents a declared drop needs, checked against the power the gate's
own MDE uses, and the --limit and minutes it prints for a baseline."""

import json
import subprocess
import sys

import pytest

from harness.gate import plan
from harness.gate.paired import mcnemar_power


@pytest.mark.parametrize("drop, churn", [(0.03, 0.08), (0.05, 0.0), (0.02, 0.10)])
def test_connor_sample_size_gives_the_power_it_promises(drop, churn):
    # Connor's n is the inverse of the power formula behind the gate's MDE: n documents reach 80 %, n - 1 do not.
    n = plan.binary_documents(drop, churn, 0.05)
    assert mcnemar_power(n, churn, drop, 0.05) >= 0.8 > mcnemar_power(n - 1, churn, drop, 0.05)


def test_three_points_of_accuracy_need_about_thirteen_hundred_questions():
    # Connor: ((2.394 sqrt(0.11) + 0.842 sqrt(0.11 - 0.0009)) / 0.03)^2 at alpha 0.05 / 3.
    assert plan.binary_documents(0.03, 0.08, 0.05 / 3) == pytest.approx(1275, abs=5)


def test_limit_for_spreads_the_documents_over_a_group():
    assert plan.limit_for([100, 100, 100], 150) == 50
    assert plan.limit_for([10, 100, 100], 150) == 70  # 10 + 70 + 70
    assert plan.limit_for([10, 10], 50) is None


def write_baseline(path, accuracy_right: int, n: int = 200):
    samples = [{"task": "quiz", "doc_id": str(i), "scores": {"acc": int(i < accuracy_right)}} for i in range(n)]
    record = {"results": {"quiz": {"n": n, "acc": accuracy_right / n}},
              "tasks": {"quiz": {"version": "1", "prompt_hash": "p", "docs_total": 5000,
                                 "metrics": {"acc": {"aggregation": "mean", "higher_is_better": True}}}},
              "systems": {"tasks": {"quiz": {"wall_s": 30.0}}}}
    path.write_text(json.dumps({"format": "harness-baseline/1", "record": record, "samples": samples,
                                "gate": {"min_effect": {"quiz:acc": "0.05"}}}))
    return path


def harness_plan(*args):
    return subprocess.run([sys.executable, "-m", "harness", "plan", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_plan_prints_documents_limit_and_minutes(tmp_path):
    result = harness_plan("--baseline", write_baseline(tmp_path / "b.json", 100), "--churn", "0.08")
    assert result.returncode == 0, result.stderr
    needed = plan.binary_documents(0.05, 0.08, 0.05)
    assert f"--limit quiz={needed}" in result.stdout
    minutes = needed * 30.0 / 200 / 60  # the baseline's 0.15 s a document
    assert f"{minutes:.1f} CPU minutes" in result.stdout


def test_a_drop_the_baseline_cannot_lose_is_out_of_reach(tmp_path):
    result = harness_plan("--baseline", write_baseline(tmp_path / "b.json", 4), "--min-effect", "quiz:acc=0.05")
    assert result.returncode == 0 and "cannot be caught" in result.stdout and "0 of 1 drops" in result.stdout
    missing = harness_plan("--baseline", write_baseline(tmp_path / "c.json", 4), "--min-effect", "other:acc=0.05")
    assert "other:acc is not in the baseline" in missing.stdout
