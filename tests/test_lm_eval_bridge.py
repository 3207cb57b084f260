"""The lm-eval bridge: an lm-eval task, from a local YAML, run by lm-eval 0.4.13 itself on our adapters (the
reference model and a quantized variant) gives the numbers of our own task on the same documents."""

import json
import subprocess
import sys

import lm_eval
import pytest

from harness.lm_eval_bridge import HarnessLM  # importing it registers the `harness` model
from harness.record.run_folder import read_run
from harness.cli import main
from tasks.base import DATA_DIR
from tasks.mmlu import read_split

pytestmark = pytest.mark.slow  # whole evaluations of the real model, ours and lm-eval's
# lm-eval 0.4.13's mmlu/default/_default_template_yaml for one subject, reading a local JSON-lines copy.
YAML = """task: bridge_mmlu_anatomy
dataset_path: json
dataset_kwargs:
  data_files:
    test: {test}
    dev: {dev}
test_split: test
fewshot_split: dev
fewshot_config:
  sampler: first_n
output_type: multiple_choice
doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{choices[0]}}}}\\nB. {{{{choices[1]}}}}\\nC. {{{{choices[2]}}}}\\nD. {{{{choices[3]}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
description: "The following are multiple choice questions (with answers) about anatomy.\\n\\n"
metadata:
  version: 1.0
"""
LIMIT = 8


@pytest.fixture(scope="module")
def task_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lmeval-tasks")
    for split in ("test", "dev"):
        rows = read_split(DATA_DIR / "mmlu" / split / f"anatomy_{split}.csv")
        (folder / f"anatomy_{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "bridge_mmlu_anatomy.yaml").write_text(YAML.format(test=folder / "anatomy_test.jsonl",
                                                                 dev=folder / "anatomy_dev.jsonl"))
    return folder


@pytest.mark.parametrize("spec", ["smollm2-135m", "smollm2-135m:int8"])
def test_an_lm_eval_task_through_the_bridge_equals_our_task(tmp_path, task_folder, spec):
    from lm_eval.tasks import TaskManager

    theirs = lm_eval.simple_evaluate(model="harness", model_args=f"spec={spec}", tasks=["bridge_mmlu_anatomy"],
                                     num_fewshot=5, limit=LIMIT, log_samples=True,
                                     task_manager=TaskManager(include_path=str(task_folder)))
    assert main(["run", "--model", spec, "--tasks", "mmlu_anatomy", "--num-fewshot", "5", "--limit", str(LIMIT),
                 "--output", str(tmp_path / "ours")]) == 0
    record, samples = read_run(tmp_path / "ours")
    assert theirs["results"]["bridge_mmlu_anatomy"]["acc,none"] == record["results"]["mmlu_anatomy"]["acc"]
    their_samples = sorted(theirs["samples"]["bridge_mmlu_anatomy"], key=lambda s: s["doc_id"])
    assert len(their_samples) == len(samples) == LIMIT
    for mine, their in zip(samples, their_samples):
        assert [tuple(argument) for argument in their["arguments"]] == \
            [(mine["prompt"], " " + letter) for letter in "ABCD"]  # the same prompt, to the character
        for ours, (logprob, greedy) in zip(mine["response"], (r[0] for r in their["resps"])):
            assert abs(ours["logprob"] - float(logprob)) <= 1e-4 and ours["is_greedy"] == bool(greedy)


def test_the_command_line_runs_lm_eval_with_the_harness_model(tmp_path, task_folder):
    assert lm_eval.api.registry.get_model("harness") is HarnessLM
    result = subprocess.run([sys.executable, "-m", "harness.lm_eval_bridge", "--model", "harness", "--model_args",
                             "spec=smollm2-135m", "--tasks", "bridge_mmlu_anatomy", "--include_path",
                             str(task_folder), "--limit", "2", "--output_path", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "bridge_mmlu_anatomy" in result.stdout and "acc" in result.stdout
