"""A task's identity in the run record comes from what actually runs: the prompt hash from the rendered requests,
the breakdown tables from the task itself, the registry from the task files that exist."""

import ast
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tasks
import tasks.gsm8k
from harness.engine.evaluator import PromptFormat, describe_task, render
from harness.engine.task import TaskOptions

ROOT = Path(__file__).resolve().parent.parent
DOCS = 3


def record_of(name: str, options: TaskOptions = TaskOptions(), docs: int = DOCS) -> dict:
    """The task's run-record entry, made as the evaluator makes it: from its requests rendered as plain text."""
    task = tasks.build(name, options)
    documents = task.docs()
    requests = [render(r, None, PromptFormat()) for doc in documents[:docs] for r in task.requests(doc)]
    return describe_task(task, len(documents), docs, requests)


def test_gsm8k_hash_changes_with_its_stop_strings_and_max_tokens(monkeypatch):
    before = record_of("gsm8k")["prompt_hash"]
    assert record_of("gsm8k")["prompt_hash"] == before  # the same requests give the same hash

    # What the old hand-written template left out: the hash must follow every field the model is sent.
    with monkeypatch.context() as patch:
        patch.setattr(tasks.gsm8k, "MAX_NEW_TOKENS", 512)
        assert record_of("gsm8k")["prompt_hash"] != before
    original = tasks.gsm8k.GSM8K.requests

    def other_stop(self, doc):
        return [dataclasses.replace(r, stop=r.stop[:-1]) for r in original(self, doc)]  # no "<|im_end|>"

    with monkeypatch.context() as patch:
        patch.setattr(tasks.gsm8k.GSM8K, "requests", other_stop)
        assert record_of("gsm8k")["prompt_hash"] != before
    assert record_of("gsm8k")["prompt_hash"] == before


def test_hash_follows_the_few_shot_draws_and_the_documents_run():
    base = record_of("gsm8k")["prompt_hash"]
    assert record_of("gsm8k", TaskOptions(fewshot_seed=1))["prompt_hash"] != base  # other examples in the prompt
    assert record_of("gsm8k", TaskOptions(num_fewshot=0))["prompt_hash"] != base
    assert record_of("gsm8k", docs=2)["prompt_hash"] != base  # other requests: --limit is part of what ran


HASH_IN_A_FRESH_PROCESS = """
import tasks
from harness.engine.evaluator import PromptFormat, describe_task, render
for name in ("gsm8k", "mmlu_anatomy", "wikitext"):
    task = tasks.build(name)
    docs = task.docs()
    requests = [render(r, None, PromptFormat()) for doc in docs[:3] for r in task.requests(doc)]
    print(describe_task(task, len(docs), 3, requests)["prompt_hash"])
"""


def test_hash_is_the_same_from_run_to_run():
    # Separate processes with different string-hash seeds: nothing in the hash may depend on set or dict order
    # or on object identity.
    expected = [record_of(name)["prompt_hash"] for name in ("gsm8k", "mmlu_anatomy", "wikitext")]
    for seed in ("1", "2"):
        result = subprocess.run([sys.executable, "-c", HASH_IN_A_FRESH_PROCESS], capture_output=True, text=True,
                                cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": seed}, timeout=300)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == expected


def test_breakdown_tables_are_in_the_record():
    assert record_of("mmlu_anatomy")["breakdown"] == {
        "table": "mmlu", "title": "MMLU by subject and category", "metrics": ["acc"],
        "columns": {"category": "stem", "subject": "anatomy"}}
    assert record_of("mrpc")["breakdown"]["metrics"] == ["acc", "f1"]
    assert record_of("stsb")["breakdown"] == {"table": "glue", "title": "GLUE by task",
                                              "metrics": ["pearson", "spearman"], "columns": {}}
    assert "breakdown" not in record_of("gsm8k")


def test_registry_finds_every_task_file_and_its_group_aggregation():
    modules = [module.__name__ for module in tasks.benchmark_modules()]
    assert modules == ["tasks.mmlu", "tasks.glue", "tasks.gsm8k", "tasks.truthfulqa", "tasks.wikitext",
                       "tasks.humaneval", "tasks.realtoxicityprompts", "tasks.mt_bench",
                       "tasks.crows_pairs"]  # LIST_ORDER: `harness list tasks`
    helpers = {"__init__", "base", "scoring", "mt_bench_judging"}  # shared by benchmarks, registering none
    files = {path.stem for path in (ROOT / "tasks").glob("*.py")} - helpers
    assert {name.removeprefix("tasks.") for name in modules} == files
    assert tasks.GROUP_AGGREGATION == {"glue": "macro", "truthfulqa": "none"}
    assert list(tasks.GROUPS)[:5] == ["mmlu_stem", "mmlu_humanities", "mmlu_social_sciences", "mmlu_other", "mmlu"]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "tasks").glob("*.py")), ids=lambda p: p.name)
def test_tasks_see_only_the_task_the_requests_the_prompts_the_services_and_the_errors(path):
    allowed = {"harness.engine.task", "harness.engine.requests", "harness.engine.prompts", "harness.engine.programs",
               "harness.engine.judging", "harness.errors"}
    harness_imports = {name for name in imported_modules(path) if name.split(".")[0] == "harness"}
    assert harness_imports <= allowed


@pytest.mark.parametrize("path", sorted((ROOT / "reports").glob("*.py")), ids=lambda p: p.name)
def test_reports_never_import_a_task(path):
    assert not {name for name in imported_modules(path) if name.split(".")[0] == "tasks"}
