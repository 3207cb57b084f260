"""`harness run` and `harness list` as a user runs them: the run folder, and one-line errors with exit code 2."""

import hashlib
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

import tasks
from harness.cli import main
from harness.record.store import ResultsStore

pytestmark = pytest.mark.slow  # most tests run `harness run` processes on the real model

def harness(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=cwd,
                          env=env)


@pytest.mark.parametrize("args, message", [
    (["--model", "smollm2-135m", "--tasks", "mmlu_nonsense"], "unknown task 'mmlu_nonsense'"),
    (["--model", "gpt-17", "--tasks", "wikitext"], "unknown model 'gpt-17'; known models: smollm2-135m"),
    (["--model", "smollm2-135m:int3", "--tasks", "wikitext"], "unknown variant 'int3'"),
    (["--model", "Not A Spec!", "--tasks", "wikitext"], "malformed model spec"),
    (["--model", "smollm2-135m", "--tasks", "wikitext", "--num-fewshot", "2"], "takes no few-shot examples"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, args, message):
    result = harness("run", *args, "--output", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("harness: error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("limit", ["0", "-3", "many"])
def test_limit_must_be_positive(limit):
    result = harness("run", "--model", "smollm2-135m", "--tasks", "wikitext", "--limit", limit)
    assert result.returncode == 2 and "--limit" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_debug_shows_the_traceback():
    result = harness("--debug", "run", "--model", "gpt-17", "--tasks", "wikitext")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_cuda_without_a_gpu_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # these machines have none; a GPU box might
    code = main(["run", "--model", "smollm2-135m", "--tasks", "wikitext", "--device", "cuda",
                 "--output", str(tmp_path / "r")])
    assert code == 2 and "no CUDA GPU is available" in capsys.readouterr().err


def test_missing_data_file_names_the_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tasks.mmlu, "DATA_DIR", tmp_path)
    code = main(["run", "--model", "smollm2-135m", "--tasks", "mmlu_anatomy", "--output", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "missing data file" in err and "anatomy_test.csv" in err


def test_malformed_csv_row_names_file_and_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "mmlu" / "test").mkdir(parents=True)
    (tmp_path / "mmlu" / "test" / "anatomy_test.csv").write_text(
        "question,choice0,choice1,choice2,choice3,answer\nQ,a,b,c,d,1\nQ2,a,b,c,d,seven\n")
    monkeypatch.setattr(tasks.mmlu, "DATA_DIR", tmp_path)
    code = main(["run", "--model", "smollm2-135m", "--tasks", "mmlu_anatomy", "--output", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "anatomy_test.csv" in err and "line 3" in err


def test_unshipped_data_is_a_one_line_error_before_the_model_loads(tmp_path):
    offline = {**os.environ, "HF_HUB_OFFLINE": "1"}  # as on these machines, wherever the test runs
    result = harness("run", "--model", "smollm2-135m", "--tasks", "sst2,mnli", "--output", str(tmp_path / "r"),
                     env=offline)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "mnli: its data is not shipped" in result.stderr and "--data-dir" in result.stderr


def test_chat_template_and_system_prompt_reach_the_model_and_the_record(tmp_path):
    out = tmp_path / "run"
    result = harness("run", "--model", "smollm2-135m", "--tasks", "rte", "--limit", "2", "--apply-chat-template",
                     "--system-prompt", "Answer True or False.", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "smollm2-135m, chat template" in result.stdout
    settings = json.loads((out / "results.json").read_text())["settings"]
    assert settings["chat_template"] is True and settings["system_prompt"] == "Answer True or False."
    assert len(settings["chat_template_sha256"]) == 64 and settings["fewshot_as_multiturn"] is True
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert samples[0]["prompt"].startswith("<|im_start|>system\nAnswer True or False.<|im_end|>\n<|im_start|>user\n")
    assert samples[0]["prompt"].endswith("True or False?\nAnswer:<|im_end|>\n<|im_start|>assistant\n")


def test_few_shot_examples_can_share_one_user_turn(tmp_path):
    out = tmp_path / "run"
    result = harness("run", "--model", "smollm2-135m", "--tasks", "mmlu_anatomy", "--limit", "1", "--num-fewshot",
                     "2", "--apply-chat-template", "--fewshot-as-multiturn", "false", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "results.json").read_text())["settings"]["fewshot_as_multiturn"] is False
    prompt = json.loads((out / "samples.jsonl").read_text().splitlines()[0])["prompt"]
    # The description is the system message, as lm-eval has it (with its trailing blank line); both examples
    # and the question are one user turn.
    assert prompt.count("<|im_start|>user\n") == 1 and prompt.count("<|im_start|>assistant\n") == 1
    assert prompt.startswith("<|im_start|>system\nThe following are multiple choice questions (with answers) "
                             "about anatomy.\n\n<|im_end|>\n<|im_start|>user\n")
    assert prompt.endswith("\nAnswer:<|im_end|>\n<|im_start|>assistant\n") and prompt.count("\nAnswer: ") == 2


def test_list_prints_tasks_and_models():
    listed = harness("list", "tasks").stdout.split()
    assert {"mmlu", "mmlu_stem", "mmlu_world_religions", "wikitext", "glue", "sst2", "mnli", "gsm8k", "gsm8k_cot",
            "truthfulqa", "truthfulqa_mc1", "truthfulqa_mc2", "truthfulqa_gen"} <= set(listed)
    assert sum(name.startswith("mmlu_") for name in listed) == 57 + 4
    assert "smollm2-135m" in harness("list", "models").stdout


def test_run_writes_the_run_record(tmp_path):
    out = tmp_path / "run"
    result = harness("run", "--model", "smollm2-135m", "--tasks", "mmlu_anatomy,mmlu_astronomy",
                     "--limit", "3", "--num-fewshot", "1", "--batch-size", "2", "--output", str(out),
                     "--results-db", str(tmp_path / "results.sqlite"))
    assert result.returncode == 0, result.stderr
    assert f"results: {out}" in result.stdout and "mmlu_anatomy" in result.stdout
    record = json.loads((out / "results.json").read_text())
    assert record["model"]["spec"] == "smollm2-135m" and len(record["model"]["fingerprint"]) == 64
    assert record["model"]["dtype"] == "float32" and record["environment"]["versions"]["torch"]
    anatomy = record["tasks"]["mmlu_anatomy"]
    assert anatomy["fewshot_ids"] == ["dev:0"] and anatomy["docs_evaluated"] == 3 and anatomy["docs_total"] == 135
    assert set(anatomy["data_sha256"]) == {"anatomy_test.csv", "anatomy_dev.csv"}
    assert record["results"]["mmlu_anatomy"]["n"] == 3
    assert 0 <= record["results"]["mmlu_anatomy"]["acc"] <= 1
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 and {len(s["request_keys"]) for s in samples} == {4}
    assert all(s["scores"]["acc"] in (0.0, 1.0) and s["target"] in "ABCD" for s in samples)
    table = pd.read_csv(out / "results.csv")
    assert list(table.columns) == ["task", "metric", "value", "stderr", "ci95_low", "ci95_high", "n"]
    anatomy_row = table[(table.task == "mmlu_anatomy") & (table.metric == "acc")].iloc[0]
    assert [anatomy_row.ci95_low, anatomy_row.ci95_high] == pytest.approx(record["results"]["mmlu_anatomy"]["acc_ci95"])
    store = ResultsStore(tmp_path / "results.sqlite")
    latest = store.latest("smollm2-135m", "mmlu_anatomy", "acc", num_fewshot=1)
    assert latest["folder"] == str(out.resolve()) and latest["value"] == record["results"]["mmlu_anatomy"]["acc"]
    assert latest["prompt_hash"] == anatomy["prompt_hash"] and latest["docs_evaluated"] == 3
    quality = table[~table.metric.str.startswith("systems:")]
    assert set(quality.task) == {"mmlu_anatomy", "mmlu_astronomy"}
    assert set(table[table.metric.str.startswith("systems:")].task) == {"mmlu_anatomy", "mmlu_astronomy", "run"}


def test_results_do_not_move_with_batch_size(tmp_path):
    records = []
    for batch_size in ("1", "8"):
        out = tmp_path / f"b{batch_size}"
        assert harness("run", "--model", "smollm2-135m", "--tasks", "mmlu_college_biology", "--limit", "8",
                       "--batch-size", batch_size, "--output", str(out)).returncode == 0
        records.append(json.loads((out / "results.json").read_text()))
    assert records[0]["results"] == records[1]["results"]


def test_an_output_folder_with_anything_in_it_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = harness("run", "--model", "smollm2-135m", "--tasks", "wikitext", "--output", str(tmp_path))
    assert result.returncode == 2 and "already exists and is not empty" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_an_empty_output_folder_is_filled(tmp_path, runs_share_smollm2, capsys):
    """What `mktemp -d` gives a script: the run goes into it."""
    assert main(["run", "--model", "smollm2-135m", "--tasks", "mmlu_anatomy", "--limit", "1", "--output",
                 str(tmp_path), "--no-cache"]) == 0
    assert {"results.json", "samples.jsonl", "results.csv", "run.json"} <= {p.name for p in tmp_path.iterdir()}


def test_bad_input_found_mid_run_leaves_a_given_empty_folder_empty_and_in_place(tmp_path):
    from harness.record.run_folder import remove_run

    (tmp_path / "run.json").write_text("{}")
    remove_run(tmp_path, existed=True)
    assert tmp_path.is_dir() and list(tmp_path.iterdir()) == []
    made = tmp_path / "made"
    made.mkdir()
    (made / "run.json").write_text("{}")
    remove_run(made, existed=False)
    assert not made.exists()


def test_humaneval_runs_end_to_end_on_the_real_model(tmp_path):
    out = tmp_path / "run"
    result = harness("run", "--model", "smollm2-135m", "--tasks", "humaneval", "--limit", "2",
                     "--allow-code-execution", "--output", str(out))
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "results.json").read_text())
    assert record["results"]["humaneval"]["n"] == 2 and "pass@1" in record["results"]["humaneval"]
    assert record["settings"]["code_execution"]["timeout_s"] == 3.0
    isolation = record["settings"]["code_execution"]["isolation"]
    assert isolation.startswith("bubblewrap: user, mount, pid, network")
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    for sample in samples:  # each completion's outcome, with the program's verdict and its walls
        (outcome,) = sample["scores"]["results"]
        assert outcome["status"] in {"passed", "failed", "error", "timed_out", "crashed"}
        assert sample["scores"]["pass@1"] == float(outcome["status"] == "passed")
        assert outcome["isolation"] == isolation and "untrusted_stdout" in outcome

    # What a program prints is data: a failed program that printed markup is shown escaped and labelled.
    hostile = "</pre><script>document.title='owned'</script><img src=x onerror=alert(1)>"
    samples[0]["scores"].update({"pass@1": 0.0, "results": [{**samples[0]["scores"]["results"][0], "status": "failed",
                                                             "untrusted_stdout": hostile}]})
    data = "".join(json.dumps(sample) + "\n" for sample in samples).encode()
    (out / "samples.jsonl").write_bytes(data)
    record["files"]["samples.jsonl"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (out / "results.json").write_text(json.dumps(record))  # as if the program had printed it during the run
    result = harness("report", str(out), "--format", "html", "--output", str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<script>document.title" not in page and "<img src=x" not in page
    assert "&lt;script&gt;document.title=" in page and "written by the program (untrusted)" in page


def test_realtoxicityprompts_runs_end_to_end_and_names_its_scorer(tmp_path):
    out = tmp_path / "run"
    result = harness("run", "--model", "smollm2-135m", "--tasks", "realtoxicityprompts", "--limit", "2",
                     "--samples", "3", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "toxicity scored by alt-profanity-check 1.9.1" in result.stderr
    record = json.loads((out / "results.json").read_text())
    assert set(record["results"]) == {"realtoxicityprompts_challenging", "realtoxicityprompts_nontoxic",
                                      "realtoxicityprompts"}
    assert record["results"]["realtoxicityprompts"]["n"] == 4
    assert record["tasks"]["realtoxicityprompts_nontoxic"]["toxicity_scorer"]["name"] == "profanity-check"
    task_record = record["tasks"]["realtoxicityprompts_nontoxic"]
    assert task_record["generations"] == 6 and task_record["samples"] == 3
    if task_record["empty_generations"]:  # the warning counts generations, not documents
        assert f"{task_record['empty_generations']} of 6 generations are empty" in result.stderr
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert all(len(s["response"]) == 3 and len(s["scores"]["toxicity"]) == 3 for s in samples)
    assert all(s["scores"]["expected_max_toxicity"] == pytest.approx(max(s["scores"]["toxicity"]), abs=1e-6)
               for s in samples)
