"""A task asked under a perturbation: a Task of its own (named TASK~PERTURBATION), which the evaluator runs beside
the clean task like any other, so that caching, resuming, batching and the statistics hold for it unchanged.

Its documents are the clean task's, with the same ids (so that analysis.py pairs them), and its targets the clean
ones: a perturbation never changes what the right answer is.

  TextPerturbedTask    typos, case, whitespace: each document's input text changed, asked and scored as the task
                       asks and scores it; the same metrics
  PermutedChoicesTask  choices=permute: each question asked under every rotation of its choices; per document the
                       headline metric averaged over the orders, its worst order (METRIC_every_order: right under
                       every rotation, MMBench's CircularEval, Liu et al. 2023, arXiv 2307.06281), one value per
                       order (METRIC_order_K), whether the same choice won under every order (consistency), and
                       which positions won ("chosen") against where the gold one stood ("gold"), for the
                       position-bias test
  LayoutVariantsTask   format=variants: each question asked in each of the task's prompt layouts; per document the
                       headline metric averaged over the layouts, its worst layout (METRIC_every_layout) and one
                       value per layout (METRIC_layout_NAME)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.engine.requests import Request
from harness.engine.task import Doc, Metric, Perturbable, Task
from harness.errors import UserError
from harness.robustness.perturbations import Perturbation, perturb_text, stream
from tasks.scoring import argmax_choice

SEPARATOR = "~"  # between a task's name and its perturbation's: mmlu_anatomy~choices=permute


def variant_name(task: str, perturbation: Perturbation) -> str:
    return f"{task}{SEPARATOR}{perturbation.name}"


@dataclass
class PerturbedTask(Task):
    """What every perturbed variant takes from its clean task unchanged."""

    base: Task | None = None
    perturbation: Perturbation | None = None
    seed: int = 0

    def __post_init__(self):
        self.version = self.base.version
        self.num_fewshot = self.base.num_fewshot
        self.needs_chat_template = self.base.needs_chat_template
        self.needs_judge = self.base.needs_judge

    @property
    def parts(self) -> Perturbable:
        return self.base.perturbable()

    def docs(self) -> list[Doc]:
        return self.base.docs()

    def target(self, doc: Doc) -> Any:
        return self.base.target(doc)

    def cluster(self, doc: Doc) -> str | None:
        return self.base.cluster(doc)

    def settings(self) -> dict[str, Any]:
        return {**self.base.settings(), "perturbation": self.perturbation.name, "perturbation_seed": self.seed,
                "clean_task": self.base.name}

    def data_files(self) -> list[Path]:
        return self.base.data_files()

    def fewshot_ids(self) -> list[str]:
        return self.base.fewshot_ids()

    def breakdown(self) -> None:
        return None  # the clean task's row is the one in its table; the robustness table shows this one


@dataclass
class TextPerturbedTask(PerturbedTask):
    metrics: list[Metric] = field(default_factory=list)
    _perturbed: dict[str, Doc] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        super().__post_init__()
        self.metrics = list(self.base.metrics)

    def perturbed(self, doc: Doc) -> Doc:
        """The document with its input text changed, the same every time (and in every run with this seed)."""
        if doc.id not in self._perturbed:
            fields = dict(doc.fields)
            for name in self.parts.text_fields:
                if isinstance(fields.get(name), str):
                    rng = stream(self.seed, self.base.name, doc.id, self.perturbation.name, name)
                    fields[name] = perturb_text(self.perturbation, fields[name], rng)
            self._perturbed[doc.id] = Doc(doc.id, fields)
        return self._perturbed[doc.id]

    def requests(self, doc: Doc) -> list[Request]:
        return self.base.requests(self.perturbed(doc))

    def follow_up(self, doc: Doc, responses: list[Any]) -> list[Request]:
        return self.base.follow_up(self.perturbed(doc), responses)

    def score(self, doc: Doc, responses: list[Any]) -> dict[str, Any]:
        return self.base.score(self.perturbed(doc), responses)

    def score_all(self, answered: list[tuple[Doc, list[Any]]]) -> list[dict[str, Any]]:
        return self.base.score_all([(self.perturbed(doc), responses) for doc, responses in answered])


def split(responses: list[Any], parts: int) -> list[list[Any]]:
    """The responses in `parts` equal runs: one per order or layout, each asking the same choices."""
    size = len(responses) // parts
    return [responses[start:start + size] for start in range(0, len(responses), size)]


@dataclass
class PermutedChoicesTask(PerturbedTask):
    metrics: list[Metric] = field(default_factory=list)
    orders: int = 0  # the number of choices: one order per rotation

    def __post_init__(self):
        super().__post_init__()
        headline = self.base.metrics[0]
        docs = self.base.docs()
        counts = {len(doc.fields[self.parts.choices_field]) for doc in docs}
        if len(counts) != 1:
            raise UserError(f"choices=permute needs every question of {self.base.name} to have as many choices; "
                            f"they have {sorted(counts)}")
        (self.orders,) = counts
        self.metrics = ([Metric(headline.name), Metric("consistency"), Metric(f"{headline.name}_every_order")]
                        + [Metric(f"{headline.name}_order_{k}") for k in range(self.orders)])

    def rotated(self, doc: Doc, k: int) -> Doc:
        """The document with its choices rotated by k: position i shows choice (i + k) mod n, and the gold index
        moves with its choice."""
        choices = doc.fields[self.parts.choices_field]
        gold = doc.fields[self.parts.answer_field]
        n = len(choices)
        return Doc(doc.id, {**doc.fields, self.parts.choices_field: [choices[(i + k) % n] for i in range(n)],
                            self.parts.answer_field: (gold - k) % n})

    def requests(self, doc: Doc) -> list[Request]:
        return [r for k in range(self.orders) for r in self.base.requests(self.rotated(doc, k))]

    def score(self, doc: Doc, responses: list[Any]) -> dict[str, Any]:
        headline = self.base.metrics[0].name
        values, chosen, gold, content = [], [], [], set()
        for k, answers in enumerate(split(responses, self.orders)):
            rotated = self.rotated(doc, k)
            values.append(float(self.base.score(rotated, answers)[headline]))
            position = argmax_choice(answers)  # the task's own rule: the first of equal log-probabilities
            chosen.append(position)
            gold.append(rotated.fields[self.parts.answer_field])
            content.add((position + k) % self.orders)  # which of the original choices that position shows
        scores = {headline: float(np.mean(values)), "consistency": float(len(content) == 1),
                  f"{headline}_every_order": float(worst(self.base, values))}
        scores.update({f"{headline}_order_{k}": value for k, value in enumerate(values)})
        return {**scores, "chosen": chosen, "gold": gold}


@dataclass
class LayoutVariantsTask(PerturbedTask):
    metrics: list[Metric] = field(default_factory=list)
    variants: dict[str, Task] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        super().__post_init__()
        headline = self.base.metrics[0].name
        self.variants = {layout: self.base.with_layout(layout) for layout in self.parts.layouts}
        self.metrics = ([Metric(headline), Metric(f"{headline}_every_layout")]
                        + [Metric(layout_metric(headline, layout)) for layout in self.variants])

    def requests(self, doc: Doc) -> list[Request]:
        return [r for variant in self.variants.values() for r in variant.requests(doc)]

    def score(self, doc: Doc, responses: list[Any]) -> dict[str, Any]:
        headline = self.base.metrics[0].name
        values = {layout: float(variant.score(doc, answers)[headline])
                  for (layout, variant), answers in zip(self.variants.items(), split(responses, len(self.variants)))}
        return {headline: float(np.mean(list(values.values()))),
                f"{headline}_every_layout": float(worst(self.base, list(values.values()))),
                **{layout_metric(headline, layout): value for layout, value in values.items()}}


def worst(task: Task, values: list[float]) -> float:
    return min(values) if task.metrics[0].higher_is_better else max(values)


def layout_metric(headline: str, layout: str) -> str:
    return f"{headline}_layout_{layout.replace('-', '_')}"


def why_not(task: Task, perturbation: Perturbation) -> str | None:
    """Why the perturbation cannot apply to the task, or None when it can."""
    parts = task.perturbable()
    if parts is None:
        return "its prompts are not built from a question it may change"
    if perturbation.kind == "choices" and parts.choices_field is None:
        return ("its choices are scored as separate continuations and never listed in the prompt, so their order "
                "cannot change a score")
    if perturbation.kind == "choices" and task.metrics[0].aggregation != "mean":
        return f"its score ({task.metrics[0].name}) is not a mean over questions"
    if perturbation.kind == "format" and len(parts.layouts) < 2:
        return "it writes its prompt in one layout only"
    if perturbation.changes_text and not parts.text_fields:
        return "it names no input text to change"
    return None


def make_variant(task: Task, perturbation: Perturbation, seed: int) -> PerturbedTask:
    kind = {"choices": PermutedChoicesTask, "format": LayoutVariantsTask}.get(perturbation.kind, TextPerturbedTask)
    return kind(name=variant_name(task.name, perturbation), base=task, perturbation=perturbation, seed=seed)
