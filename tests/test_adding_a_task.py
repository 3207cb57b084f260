"""docs/adding-a-task.md stays true: its benchmark file registers from a module of its own (no other file touched),
its test passes, and the line counts it states are the files' lengths."""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

import tasks
from harness.engine.evaluator import PromptFormat, describe_task, render

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "adding-a-task.md"


def files_in_guide() -> dict[str, str]:
    """The files the guide shows, each a fenced block after a `<!-- file: PATH -->` line."""
    text = GUIDE.read_text(encoding="utf-8")
    return {path: body + "\n" for path, body in re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)\n```", text, re.S)}


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def registered(tmp_path, monkeypatch):
    """The guide's task file as a module outside tasks/, registered into a copy of the registry (so that the real
    registry, and `harness list tasks`, stay as they are)."""
    files = files_in_guide()
    for attribute in ("TASKS", "GROUPS", "GROUP_AGGREGATION"):
        monkeypatch.setattr(tasks, attribute, dict(getattr(tasks, attribute)))
    monkeypatch.setitem(sys.modules, "tasks.mmlu_continuation", None)  # restored (removed) after the test
    (tmp_path / "mmlu_continuation.py").write_text(files["tasks/mmlu_continuation.py"], encoding="utf-8")
    tasks.register_module(load("tasks.mmlu_continuation", tmp_path / "mmlu_continuation.py"))
    return files


def test_the_guides_task_registers_and_its_test_passes(registered, tmp_path):
    assert "mmlu_anatomy_continuation" in tasks.TASKS and len(tasks.expand(["mmlu_continuation"])) == 57
    assert tasks.GROUP_AGGREGATION.get("mmlu_continuation", "pooled") == "pooled"
    (tmp_path / "test_mmlu_continuation.py").write_text(registered["tests/test_mmlu_continuation.py"],
                                                        encoding="utf-8")
    (tmp_path / "golden").symlink_to(ROOT / "tests" / "golden")  # the test reads lm-eval's logged prompt there
    test_module = load("guide_test_mmlu_continuation", tmp_path / "test_mmlu_continuation.py")
    try:
        tests = [getattr(test_module, name) for name in dir(test_module) if name.startswith("test_")]
        assert len(tests) == 3
        for test in tests:
            test()
    finally:
        del sys.modules["guide_test_mmlu_continuation"]


def test_the_engine_records_what_the_guide_says(registered):
    task = tasks.build("mmlu_anatomy_continuation")
    docs = task.docs()
    requests = [render(r, None, PromptFormat()) for doc in docs[:2] for r in task.requests(doc)]
    record = describe_task(task, len(docs), 2, requests)
    assert record["breakdown"]["columns"] == {"category": "stem", "subject": "anatomy"}
    assert len(record["prompt_hash"]) == 16 and record["version"] == "1.0"


def test_the_line_counts_in_the_guide_are_right():
    text = GUIDE.read_text(encoding="utf-8")
    stated = {path: int(lines) for path, lines in re.findall(r"^\| `(\S+)` \| new \| (\d+) \|", text, re.M)}
    golden = "tests/golden/mmlu_anatomy_continuation_doc0_1shot.txt"  # lm-eval's prompt: no newline at its end
    assert stated.pop(golden) == (ROOT / golden).read_text(encoding="utf-8").count("\n") + 1
    assert stated == {path: body.count("\n") for path, body in files_in_guide().items()}
