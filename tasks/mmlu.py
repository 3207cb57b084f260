"""MMLU (Hendrycks et al., 2021): 57 subjects of four-way multiple choice, scored by loglikelihood.

The prompt is lm-evaluation-harness 0.4.x's default `mmlu` task, byte for byte:

    The following are multiple choice questions (with answers) about {subject, _ as spaces}.\n\n
    [k dev examples, each: {question.strip()}\nA. {c0}\nB. {c1}\nC. {c2}\nD. {c3}\nAnswer: {letter}\n\n]
    {question.strip()}\nA. {c0}\nB. {c1}\nC. {c2}\nD. {c3}\nAnswer:

The four continuations are " A" .. " D"; the prediction is the one with the highest loglikelihood (acc).
Few-shot examples are the first k rows of the subject's dev split. Groups: the four categories of lm-eval's
`mmlu` group, and `mmlu` itself, each averaged over all their questions (weighted by subject size).
Data: tasks/data/mmlu (the `cais/mmlu` export; answer is an index 0-3), see its PROVENANCE.md.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

from harness.engine.prompts import Prompt
from harness.engine.requests import LoglikelihoodRequest
from harness.engine.task import Doc, Metric, Perturbable, Task
from harness.errors import UserError
from tasks.base import DATA_DIR, require_file
from tasks.scoring import argmax_choice

LETTERS = ["A", "B", "C", "D"]
VERSION = "1.0"  # lm-eval's mmlu subtask version whose prompt this reproduces
LIST_ORDER = 1  # first in `harness list tasks`

# Subject categories as lm-eval's mmlu group defines them (tasks/mmlu/default/*.yaml, `tag`).
CATEGORIES = {
    "stem": """abstract_algebra anatomy astronomy college_biology college_chemistry college_computer_science
        college_mathematics college_physics computer_security conceptual_physics electrical_engineering
        elementary_mathematics high_school_biology high_school_chemistry high_school_computer_science
        high_school_mathematics high_school_physics high_school_statistics machine_learning""".split(),
    "humanities": """formal_logic high_school_european_history high_school_us_history high_school_world_history
        international_law jurisprudence logical_fallacies moral_disputes moral_scenarios philosophy prehistory
        professional_law world_religions""".split(),
    "social_sciences": """econometrics high_school_geography high_school_government_and_politics
        high_school_macroeconomics high_school_microeconomics high_school_psychology human_sexuality
        professional_psychology public_relations security_studies sociology us_foreign_policy""".split(),
    "other": """business_ethics clinical_knowledge college_medicine global_facts human_aging management marketing
        medical_genetics miscellaneous nutrition professional_accounting professional_medicine virology""".split(),
}
SUBJECTS = sorted(s for subjects in CATEGORIES.values() for s in subjects)
CATEGORY_OF = {subject: category for category, subjects in CATEGORIES.items() for subject in subjects}


def read_split(path: Path) -> list[dict]:
    rows = []
    raw = require_file(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise UserError(f"{path}, line {line}: not UTF-8 text; the data file is damaged or in another encoding") \
            from None
    for line_number, row in enumerate(csv.DictReader(io.StringIO(text, newline="")), start=2):
        try:
            choices = [row[f"choice{i}"] for i in range(4)]
            answer = int(row["answer"])
            if answer not in range(4) or row["question"] is None or None in choices:
                raise ValueError
        except (KeyError, ValueError, TypeError):
            raise UserError(f"{path}: malformed row near line {line_number} "
                            "(expected question,choice0..choice3,answer 0-3)") from None
        rows.append({"question": row["question"], "choices": choices, "answer": answer})
    return rows


@dataclass(frozen=True)
class Layout:
    """How a question and its choices are written. The first is lm-eval's; the others vary what FormatSpread (Sclar
    et al. 2023, "Quantifying Language Models' Sensitivity to Spurious Features in Prompt Design", arXiv 2310.11324)
    varies: a field's name and casing, the choices' enumerator and its separator, what joins the choices."""

    question_label: str = ""  # before the question
    choice: str = "\n{letter}. {choice}"  # each choice, in order
    answer: str = "\nAnswer:"  # after the last choice; the answer (" " + letter) follows it
    lowercase_letters: bool = False

    def letters(self) -> list[str]:
        return [letter.lower() for letter in LETTERS] if self.lowercase_letters else LETTERS


LAYOUTS = {
    "lm-eval": Layout(),
    "parenthesised": Layout(choice="\n({letter}) {choice}"),
    "one-line": Layout(choice=" [{letter}] {choice}"),
    "upper-case-fields": Layout(question_label="QUESTION: ", choice="\n{letter}) {choice}", answer="\nANSWER:"),
    "lower-case-letters": Layout(choice="\n{letter}: {choice}", lowercase_letters=True),
    "the-answer-is": Layout(question_label="Question: ", choice="\n{letter} - {choice}", answer="\nThe answer is"),
}


def format_question(row: dict, layout: Layout = LAYOUTS["lm-eval"]) -> str:
    choices = "".join(layout.choice.format(letter=letter, choice=choice)
                      for letter, choice in zip(layout.letters(), row["choices"]))
    return layout.question_label + row["question"].strip() + choices + layout.answer


@dataclass
class MMLUSubject(Task):
    subject: str = ""
    data_dir: Path | None = None  # default: the shipped copy
    layout: str = "lm-eval"  # a key of LAYOUTS: anything else is a robustness variant (format=variants)
    metrics: list[Metric] = field(default_factory=lambda: [Metric("acc")])

    def __post_init__(self):
        self.version = VERSION
        if self.num_fewshot > 5:
            raise UserError(f"{self.name}: the dev split has 5 examples, so --num-fewshot must be at most 5")

    def _path(self, split: str) -> Path:
        return (self.data_dir or DATA_DIR / "mmlu") / split / f"{self.subject}_{split}.csv"

    def docs(self) -> list[Doc]:
        return [Doc(str(i), row) for i, row in enumerate(read_split(self._path("test")))]

    def description(self) -> str:
        return f"The following are multiple choice questions (with answers) about {self.subject.replace('_', ' ')}.\n\n"

    @cached_property
    def shots(self) -> tuple[tuple[str, str], ...]:
        if not self.num_fewshot:
            return ()
        examples = read_split(self._path("dev"))[: self.num_fewshot]
        layout = LAYOUTS[self.layout]
        return tuple((format_question(row, layout), layout.letters()[row["answer"]]) for row in examples)

    def prompt(self, doc: Doc) -> Prompt:
        return Prompt(format_question(doc.fields, LAYOUTS[self.layout]), self.shots, self.description())

    def requests(self, doc: Doc) -> list[LoglikelihoodRequest]:
        context = self.prompt(doc)
        return [LoglikelihoodRequest(context, " " + letter) for letter in LAYOUTS[self.layout].letters()]

    def score(self, doc: Doc, responses) -> dict:
        return {"acc": float(argmax_choice(responses) == doc.fields["answer"])}

    def target(self, doc: Doc) -> str:
        return LETTERS[doc.fields["answer"]]

    def data_files(self) -> list[Path]:
        return [self._path("test")] + ([self._path("dev")] if self.num_fewshot else [])

    def fewshot_ids(self) -> list[str]:
        return [f"dev:{i}" for i in range(self.num_fewshot)]

    def perturbable(self) -> Perturbable:
        return Perturbable(text_fields=("question",), choices_field="choices", answer_field="answer",
                           layouts=tuple(LAYOUTS))

    def with_layout(self, layout: str) -> MMLUSubject:
        return replace(self, layout=layout)

    def breakdown(self) -> dict:
        return {"table": "mmlu", "title": "MMLU by subject and category", "metrics": ["acc"],
                "columns": {"category": CATEGORY_OF[self.subject], "subject": self.subject}}


def register(tasks: dict, groups: dict) -> None:
    for subject in SUBJECTS:
        tasks[f"mmlu_{subject}"] = lambda options, s=subject: MMLUSubject(
            name=f"mmlu_{s}", subject=s, num_fewshot=options.fewshot(0))
    for category, subjects in CATEGORIES.items():
        groups[f"mmlu_{category}"] = [f"mmlu_{s}" for s in sorted(subjects)]
    groups["mmlu"] = [f"mmlu_{c}" for c in CATEGORIES]
