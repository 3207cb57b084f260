"""GLUE (Wang et al., 2018): sentence and sentence-pair classification, zero-shot, scored by loglikelihood.

Each task asks one question of the validation split and scores each choice as a continuation (" " + choice); the
prediction is the choice with the highest loglikelihood. Prompts, choices and metrics are lm-evaluation-harness
0.4.13's `glue` tasks (lm_eval/tasks/glue/*/default.yaml), byte for byte:

    cola   {sentence}\\nQuestion: Does this sentence make sense?\\nAnswer:                         no/yes        mcc
    sst2   {sentence}\\nQuestion: Is this sentence positive or negative?\\nAnswer:                 negative/positive acc
    mrpc   Sentence 1: {s1}\\nSentence 2: {s2}\\nQuestion: Do both sentences mean the same thing?\\nAnswer:
                                                                                             no/yes        acc, f1
    qnli   {question}\\n{sentence}\\nQuestion: Does this response answer the question?\\nAnswer:   yes/no        acc
    rte    {s1}\\nQuestion: {s2} True or False?\\nAnswer:                                          True/False    acc
    wnli   {s1}\\nQuestion: {s2} True or False?\\nAnswer:                                          False/True    acc
    mnli   {premise}\\nQuestion: {hypothesis, ending in "."} True, False or Neither?\\nAnswer:   True/Neither/False
    qqp    Question 1: {q1}\\nQuestion 2: {q2}\\nQuestion: Do both questions ask the same thing?\\nAnswer:
                                                                                             no/yes        acc, f1

STS-B is not in lm-eval. Here it asks for a rating and scores the six ratings " 0" .. " 5" as choices; the
prediction is their probability-weighted mean, sum(r * p_r) with p the softmax of the six loglikelihoods, so that
it is continuous like the gold scores (an argmax would give six tied values and blunt Spearman's rank
correlation). Metrics: Pearson and Spearman correlation with the gold scores.

The `glue` group is the seven shipped tasks, scored as the GLUE benchmark scores itself: the plain mean of each
task's number (MCC for CoLA, the mean of accuracy and F1 for MRPC, of Pearson and Spearman for STS-B). MNLI and QQP
are not shipped (see tasks/data/glue/PROVENANCE.md): they load `nyu-mll/glue` from the Hugging Face Hub, or a local
copy given with --data-dir. Few-shot examples would come from the train split, which is not shipped either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.engine.prompts import Prompt
from harness.engine.requests import LoglikelihoodRequest
from harness.engine.task import Doc, Metric, Perturbable, Task
from harness.errors import UserError
from tasks.base import DATA_DIR, read_jsonl
from tasks.scoring import argmax_choice, relative_likelihoods

VERSION = "1.0"
HUB_DATASET = "nyu-mll/glue"
LIST_ORDER = 2  # after MMLU in `harness list tasks`
GROUP_AGGREGATION = {"glue": "macro"}  # the GLUE score: the plain mean of the task scores


def mnli_text(doc: dict) -> str:
    hypothesis = doc["hypothesis"].strip()
    return (f"{doc['premise']}\nQuestion: {hypothesis + ('' if hypothesis.endswith('.') else '.')} "
            "True, False or Neither?\nAnswer:")


@dataclass(frozen=True)
class Spec:
    config: str  # the dataset's configuration name in nyu-mll/glue
    split: str
    text: Callable[[dict], str]
    choices: tuple[str, ...]
    metrics: tuple[str, ...]  # of acc, mcc, f1
    shipped: bool = True


SPECS = {
    "cola": Spec("cola", "validation", lambda d: f"{d['sentence']}\nQuestion: Does this sentence make sense?\nAnswer:",
                 ("no", "yes"), ("mcc",)),
    "sst2": Spec("sst2", "validation",
                 lambda d: f"{d['sentence']}\nQuestion: Is this sentence positive or negative?\nAnswer:",
                 ("negative", "positive"), ("acc",)),
    "mrpc": Spec("mrpc", "validation",
                 lambda d: f"Sentence 1: {d['sentence1']}\nSentence 2: {d['sentence2']}\n"
                           "Question: Do both sentences mean the same thing?\nAnswer:",
                 ("no", "yes"), ("acc", "f1")),
    "qnli": Spec("qnli", "validation",
                 lambda d: f"{d['question']}\n{d['sentence']}\n"
                           "Question: Does this response answer the question?\nAnswer:",
                 ("yes", "no"), ("acc",)),
    "rte": Spec("rte", "validation", lambda d: f"{d['sentence1']}\nQuestion: {d['sentence2']} True or False?\nAnswer:",
                ("True", "False"), ("acc",)),
    "wnli": Spec("wnli", "validation",
                 lambda d: f"{d['sentence1']}\nQuestion: {d['sentence2']} True or False?\nAnswer:",
                 ("False", "True"), ("acc",)),
    "mnli": Spec("mnli", "validation_matched", mnli_text, ("True", "Neither", "False"), ("acc",), shipped=False),
    "mnli_mismatch": Spec("mnli", "validation_mismatched", mnli_text, ("True", "Neither", "False"), ("acc",),
                          shipped=False),
    "qqp": Spec("qqp", "validation",
                lambda d: f"Question 1: {d['question1']}\nQuestion 2: {d['question2']}\n"
                          "Question: Do both questions ask the same thing?\nAnswer:",
                ("no", "yes"), ("acc", "f1"), shipped=False),
}
# The input text of every GLUE task's documents (each task has one or two of them); never the label.
TEXT_FIELDS = ("sentence", "sentence1", "sentence2", "question", "question1", "question2", "premise", "hypothesis")
AGGREGATION = {"acc": "mean", "mcc": "mcc", "f1": "f1", "pearson": "pearson", "spearman": "spearman"}
STSB_RATINGS = ("0", "1", "2", "3", "4", "5")


def load_unshipped(task: str, config: str, split: str, data_dir: Path | None) -> tuple[list[dict], list[Path]]:
    """Rows of a split that is not shipped: from --data-dir (the Hub repository's layout, or JSON Lines), or else
    from the Hugging Face Hub. Returns the rows and the local files they came from."""
    import datasets  # here: a second to import, and only MNLI and QQP need it

    if data_dir is not None:
        folder = Path(data_dir) / config
        parquet = sorted(folder.glob(f"{split}-*.parquet")) + sorted((folder / split).glob("*.parquet"))
        jsonl = [folder / f"{split}.jsonl"] if (folder / f"{split}.jsonl").is_file() else []
        files = parquet or jsonl
        if not files:
            raise UserError(f"{task}: --data-dir {data_dir} has no {config}/{split}-*.parquet (the layout of the Hub's "
                            f"{HUB_DATASET}) and no {config}/{split}.jsonl")
        rows = datasets.load_dataset("parquet" if parquet else "json", data_files={split: [str(f) for f in files]},
                                     split=split)
        return list(rows), files
    from huggingface_hub import HfApi, constants  # here: only the Hub path needs it

    try:
        if not constants.HF_HUB_OFFLINE:  # one quick request first: the datasets library retries for half a minute
            HfApi().dataset_info(HUB_DATASET, timeout=10)
        return list(datasets.load_dataset(HUB_DATASET, config, split=split)), []
    except Exception as error:  # the Hub and datasets raise many kinds when offline
        reason = (str(error).splitlines() or [type(error).__name__])[0][:160]
        raise UserError(f"{task}: its data is not shipped (GLUE's MNLI and QQP are not available on these machines) "
                        f"and {HUB_DATASET} could not be loaded from the Hugging Face Hub ({reason}); give a local "
                        f"copy with --data-dir DIR holding {config}/{split}-*.parquet or {config}/{split}.jsonl"
                        ) from None


@dataclass
class GlueTask(Task):
    spec: Spec | None = None
    data_dir: Path | None = None  # only for the tasks that are not shipped

    def __post_init__(self):
        self.version = VERSION
        self.metrics = [Metric(m, AGGREGATION[m]) for m in self.spec.metrics]
        if self.num_fewshot:
            raise UserError(f"{self.name}: GLUE's few-shot examples come from its train split, which is not "
                            "shipped; run it zero-shot (--num-fewshot 0)")
        self._unshipped: tuple[list[dict], list[Path]] | None = None  # loaded once: it may come from the Hub

    def _path(self) -> Path:
        return DATA_DIR / "glue" / self.spec.config / f"{self.spec.split}.jsonl"

    def docs(self) -> list[Doc]:
        if self.spec.shipped:
            rows = read_jsonl(self._path())
        else:
            if self._unshipped is None:
                self._unshipped = load_unshipped(self.name, self.spec.config, self.spec.split, self.data_dir)
            rows = self._unshipped[0]
        return [Doc(str(i), row) for i, row in enumerate(rows)]

    def requests(self, doc: Doc) -> list[LoglikelihoodRequest]:
        context = Prompt(self.spec.text(doc.fields))
        return [LoglikelihoodRequest(context, " " + choice) for choice in self.choices()]

    def choices(self) -> tuple[str, ...]:
        return self.spec.choices

    def score(self, doc: Doc, responses) -> dict[str, Any]:
        predicted, gold = argmax_choice(responses), int(doc.fields["label"])
        values = {"acc": float(predicted == gold), "mcc": (gold, predicted), "f1": (gold, predicted)}
        return {m.name: values[m.name] for m in self.metrics}

    def target(self, doc: Doc) -> Any:
        return self.spec.choices[int(doc.fields["label"])]

    def headline(self, result: dict) -> tuple[float, float | None]:
        # GLUE's own score of a task with two metrics is their mean; the mean of the two stderrs bounds its stderr.
        names = [m.name for m in self.metrics]
        stderrs = [result.get(n + "_stderr") for n in names]
        return (float(np.mean([result[n] for n in names])),
                None if None in stderrs else float(np.mean(stderrs)))

    def data_files(self) -> list[Path]:
        if self.spec.shipped:
            return [self._path()]
        return self._unshipped[1] if self._unshipped else []

    def perturbable(self) -> Perturbable:
        # The labels are scored as continuations and never listed in the prompt: their order changes nothing.
        return Perturbable(text_fields=TEXT_FIELDS)

    def breakdown(self) -> dict:
        return {"table": "glue", "title": "GLUE by task", "metrics": [m.name for m in self.metrics], "columns": {}}


@dataclass
class STSB(GlueTask):
    def __post_init__(self):
        super().__post_init__()
        self.metrics = [Metric("pearson", "pearson"), Metric("spearman", "spearman")]

    def choices(self) -> tuple[str, ...]:
        return STSB_RATINGS

    def score(self, doc: Doc, responses) -> dict[str, Any]:
        probs = relative_likelihoods(responses)
        probs /= probs.sum()
        predicted = float(probs @ np.arange(len(STSB_RATINGS)))
        gold = float(doc.fields["label"])
        return {"pearson": (predicted, gold), "spearman": (predicted, gold)}

    def target(self, doc: Doc) -> Any:
        return float(doc.fields["label"])


STSB_SPEC = Spec("stsb", "validation",
                 lambda d: f"Sentence 1: {d['sentence1']}\nSentence 2: {d['sentence2']}\n"
                           "Question: On a scale from 0 to 5, how similar in meaning are these two sentences?\nAnswer:",
                 STSB_RATINGS, ())
SHIPPED = ["cola", "sst2", "mrpc", "qnli", "rte", "wnli", "stsb"]


def register(tasks: dict, groups: dict) -> None:
    for name, spec in SPECS.items():
        tasks[name] = lambda options, n=name, s=spec: GlueTask(
            name=n, spec=s, num_fewshot=options.fewshot(0), data_dir=options.data_dir)
    tasks["stsb"] = lambda options: STSB(name="stsb", spec=STSB_SPEC, num_fewshot=options.fewshot(0))
    groups["glue"] = SHIPPED
