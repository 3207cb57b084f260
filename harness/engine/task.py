"""The task interface: what a benchmark file (tasks/) provides to the engine, and the options the engine lends it.

A task loads its documents, turns each into requests (harness.engine.requests), turns the responses into per-sample
scores, and names how each metric aggregates. It never sees the model or the evaluator: a benchmark file imports
this module, the request and prompt types and harness.errors, and nothing else of the harness.

A context may be a `Prompt` (harness.engine.prompts), so that the engine can apply a chat template when the user asks.
The run record names a task's prompts by a hash of the requests the engine renders and sends (every field: text,
continuation, stop strings, max tokens, sampling), so there is no hand-written copy of a prompt to keep in step.

Aggregations a task may name (the engine implements them in harness.stats; all but "mean" get a bootstrap stderr,
and each a 95 % interval beside it, docs/statistics.md):
  "mean"                 the mean of per-sample values (accuracy), with stderr = sample std / sqrt(n)
  "std"                  the sample standard deviation (n - 1) of per-sample values
  "weighted_perplexity"  exp(-sum(loglikelihood) / sum(weight)) over (loglikelihood, weight) samples
  "bits_per_byte"        -sum(loglikelihood) / sum(bytes) / ln 2 over (loglikelihood, bytes) samples
  "pooled_mean"          sum(total) / sum(count) over (total, count) samples: every value pooled, where a document
                         holds several or none (MT-Bench's ratings of two turns, an unreadable one left out)
  "mcc", "f1"            Matthews correlation and F1 (positive label 1) over (gold, predicted) label samples
  "pearson", "spearman"  correlation over (predicted, gold) value samples
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.engine.judging import Judge
from harness.engine.programs import ProgramRunner
from harness.engine.requests import Request


@dataclass(frozen=True)
class TaskOptions:
    """What the user chose that a task may need; each task reads what applies to it."""

    num_fewshot: int | None = None  # None: the task's own default
    data_dir: Path | None = None  # a local copy of data that is not shipped (MNLI, QQP)
    samples: int | None = None  # generations per document for sampling tasks (humaneval, realtoxicityprompts)
    temperature: float | None = None  # their sampling temperature
    fewshot_seed: int = 1234  # the run's --seed, for tasks that draw few-shot examples at random (gsm8k)
    # Services the engine lends to tasks that need them, so that tasks never import the engine:
    run_programs: ProgramRunner | None = None  # the code sandbox; None: not allowed
    toxicity_scorer: Callable[[], Any] | None = None  # gives the one toxicity scorer of the run (harness/toxicity.py)
    judge: Callable[[], Judge] | None = None  # gives the run's judge model (harness/engine/judging.py), loaded on use
    judge_max_failures: float = 0.2  # the share of unreadable judgments above which a judged task fails
    judge_scoring: str = "generate"  # "generate": the judge writes its judgment; "logprob": its likeliest rating

    def fewshot(self, default: int) -> int:
        return default if self.num_fewshot is None else self.num_fewshot


@dataclass(frozen=True)
class Perturbable:
    """Which parts of a task's documents a robustness perturbation (harness/robustness) may change, so that it never
    touches a gold answer, a choice's label or a few-shot example:
      text_fields    the input text that typos, case and whitespace changes alter (the question, the sentences)
      choices_field  a list of choices that the prompt itself lists, in order, each asked as one request in that
                     order, and the prediction the most likely of them (MMLU); None: the order of the task's
                     choices cannot change a score (they are scored as separate continuations, never shown)
      answer_field   the gold choice's index into that list
      layouts        names of prompt layouts the task can also write (Task.with_layout), its own first; each asks
                     the same choices, only written differently"""

    text_fields: tuple[str, ...]
    choices_field: str | None = None
    answer_field: str | None = None
    layouts: tuple[str, ...] = ()


@dataclass
class Doc:
    id: str  # stable within the task: the row's index in its file
    fields: dict[str, Any]


@dataclass
class Metric:
    name: str
    aggregation: str = "mean"
    higher_is_better: bool = True


@dataclass
class Task(ABC):
    name: str
    version: str = "1"
    num_fewshot: int = 0
    metrics: list[Metric] = field(default_factory=list)
    # A chat benchmark (MT-Bench) is a conversation: asked as plain text, its turns would mean nothing, so the run
    # refuses it without --apply-chat-template.
    needs_chat_template: bool = False
    needs_judge: bool = False  # its scores come from a judge model (TaskOptions.judge)

    @abstractmethod
    def docs(self) -> list[Doc]:
        """The evaluation documents, in the order the benchmark defines."""

    @abstractmethod
    def requests(self, doc: Doc) -> list[Request]:
        """What to ask the model about one document."""

    def follow_up(self, doc: Doc, responses: list[Any]) -> list[Request]:
        """What to ask next, once `responses` (the answers to every request sent for this document so far, in
        order) are in, or [] when the document is done: the second turn of a conversation reads the model's
        first answer. The engine sends every document's follow-ups together, round after round."""
        return []

    @abstractmethod
    def score(self, doc: Doc, responses: list[Any]) -> dict[str, Any]:
        """Per-sample values for each metric, from the responses to `requests(doc)` (and to its follow-ups), in
        the same order."""

    def score_all(self, answered: list[tuple[Doc, list[Any]]]) -> list[dict[str, Any]]:
        """Per-sample values for many documents at once; a task whose scoring is costly (running code, a
        classifier) overrides this to work in batches."""
        return [self.score(doc, responses) for doc, responses in answered]

    @abstractmethod
    def target(self, doc: Doc) -> Any:
        """The reference answer, as recorded in samples.jsonl."""

    def headline(self, result: dict[str, Any]) -> tuple[float, float | None]:
        """The task's one number and its stderr, from its aggregated result: what a macro-averaged group (GLUE)
        averages."""
        name = self.metrics[0].name
        return result[name], result.get(name + "_stderr")

    def cluster(self, doc: Doc) -> str | None:
        """The unit this document shares with others, or None when the documents are independent (the default).
        Documents that are not independent (several questions on one passage, perturbations of one item, turns of
        one conversation) vary together, so treating them as independent understates the uncertainty; a task
        whose documents are such returns their shared unit (the passage id), the engine records it with each
        sample and computes clustered standard errors and intervals over these units (harness/stats.py). A task
        whose per-sample value already summarises its unit (pass@k over a problem's samples) needs none: the
        document is the cluster."""
        return None

    def settings(self) -> dict[str, Any]:
        """Task-specific choices that decide its numbers (samples, scorer, ...), for the run record."""
        return {}

    def data_files(self) -> list[Path]:
        """Files whose sha256 identifies the data in the run record."""
        return []

    def fewshot_ids(self) -> list[str]:
        return []

    def perturbable(self) -> Perturbable | None:
        """What robustness perturbations may change in this task's documents, or None: it takes none (a program's
        prompt, a conversation, a sentence scored on its own)."""
        return None

    def with_layout(self, layout: str) -> Task:
        """This task writing its prompts in another of its `perturbable().layouts` (few-shot examples included)."""
        raise NotImplementedError(f"{self.name} has no other prompt layouts")

    def breakdown(self) -> dict[str, Any] | None:
        """The report table, beside the quality table, in which this task has its own row, or None. The run record
        keeps it, so that reports build the table from the record alone and never import a task:
            {"table": "mmlu",                          the table's id (and its CSV file's name)
             "title": "MMLU by subject and category",  its heading
             "metrics": ["acc"],                       the metrics it shows
             "columns": {"category": "stem", "subject": "anatomy"},   this task's values of the table's own
                                                       columns, which also sort its rows
             "chart": "score"}                         optional: draw this metric as bars by the first column"""
        return None
