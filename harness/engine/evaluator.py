"""The evaluator: the one place that knows tasks, requests and models together.

For each task it takes the documents (the first `limit`), asks the task for requests, renders their prompts (plain,
or through the model's chat template), sends each task's requests of one kind to the model in chunks (inside
`model.working_on(task)`, so that a model that measures or counts its work can say what each task cost), hands the
responses back to the tasks for per-sample scores, and aggregates them per task and per group.

It sees the model only through the interface of harness/engine/model.py: whether responses come from a cache, or
batches are timed, is the business of the model it is given.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from harness import stats
from harness.engine import distributed
from harness.engine.model import LanguageModel, method_for, non_finite
from harness.engine.prompts import Prompt
from harness.engine.requests import (
    GenerateRequest,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    Request,
    RollingLoglikelihoodRequest,
)
from harness.engine.task import Doc, Task
from harness.errors import CapabilityMissing, UserError


@dataclass(frozen=True)
class PromptFormat:
    """How prompts become text: as plain text (the default), or through the model's chat template; and the cap on a
    generation's new tokens (--max-new-tokens), applied as requests are rendered, so that the capped requests are
    the ones hashed and sent."""

    chat_template: bool = False
    system_prompt: str | None = None
    fewshot_as_multiturn: bool = True  # with a chat template: each example its own user and assistant turn
    max_new_tokens: int | None = None  # a cap on generation requests' max_tokens (--max-new-tokens); None: none

    def describe(self, model: LanguageModel) -> dict:
        template = model.chat_template if self.chat_template else None
        return {
            "chat_template": self.chat_template,
            "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest() if template else None,
            "system_prompt": self.system_prompt,
            "fewshot_as_multiturn": self.fewshot_as_multiturn if self.chat_template else None,
        }


@dataclass(frozen=True)
class Group:
    """A group of tasks that all ran, and how its row is made: "pooled" (its tasks' samples pooled, so each task
    weighs by its size, as lm-eval's MMLU groups; a mean's stderr stratified by task) or "macro" (the plain mean of
    its tasks' headline scores, the GLUE score)."""

    members: list[str]
    aggregation: str = "pooled"


@dataclass
class Evaluation:
    task_records: dict[str, dict] = field(default_factory=dict)  # what decides each task's numbers
    results: dict[str, dict] = field(default_factory=dict)  # task or group -> values, stderrs, 95 % intervals, n
    samples: list[dict] = field(default_factory=list)  # one per scored document


def evaluate(model: LanguageModel, tasks: list[Task], limit: int | None = None, batch_size: int | None = None,
             seed: int = 0, prompt_format: PromptFormat = PromptFormat(), groups: dict[str, Group] | None = None,
             limits: dict[str, int] | None = None) -> Evaluation:
    """Runs the tasks on the model, and gives each group (of tasks among these) its row. A task evaluates its first
    limits[task] documents, else its first `limit`, else all."""
    evaluation = Evaluation()
    planned: list[tuple[Task, Doc, list]] = []
    built = {task.name: task for task in tasks}
    task_names = list(built)
    rendered: dict[Prompt, str] = {}
    for name, task in built.items():
        docs = task.docs()
        selected = docs[:(limits or {}).get(name, limit)]
        mine = [(task, doc, [render(r, model, prompt_format, rendered) for r in task.requests(doc)])
                for doc in selected]
        planned += mine
        evaluation.task_records[name] = describe_task(task, len(docs), len(selected),
                                                      [r for *_, rs in mine for r in rs])
        # Prompts longer than the model's window are cut from the left, not refused: the record says how many.
        evaluation.task_records[name]["truncated_requests"] = sum(model.truncates(r) for *_, rs in mine for r in rs)

    refuse_what_the_model_cannot_answer(model, planned)
    answers_of = answer_in_rounds(model, planned, batch_size, seed, prompt_format, rendered, evaluation)
    if distributed.rank_and_size()[0] != 0:  # under torchrun, rank 0 alone scores and writes
        return evaluation

    # Each task scores all its documents in one call (a sandbox or a classifier works in batches).
    answered: dict[str, list[tuple[Doc, list]]] = defaultdict(list)
    for (task, doc, _), answers in zip(planned, answers_of):
        record = evaluation.task_records[task.name]
        record["tied_choices"] = record.get("tied_choices", 0) + tied_choices(answers)
        answered[task.name].append((doc, answers))
    per_task_scores = {name: built[name].score_all(answered[name]) for name in task_names}
    declared = {name: [built[name].cluster(doc) for doc, _ in answered[name]] for name in task_names}
    clusters = {name: cluster_ids(declared[name], [doc for doc, _ in answered[name]]) for name in task_names}

    scored = {name: iter(scores) for name, scores in per_task_scores.items()}
    cluster_of = {name: iter(ids) for name, ids in declared.items()}
    for (task, doc, requests), answers in zip(planned, answers_of):
        scores = next(scored[task.name])
        cluster = next(cluster_of[task.name])
        if isinstance(requests[0], GenerateRequest):
            # An instruction-tuned model given a raw prompt often ends its turn at once: the user should hear of
            # it rather than read a silent zero.
            record = evaluation.task_records[task.name]
            record["generations"] = record.get("generations", 0) + len(answers)
            record["empty_generations"] = record.get("empty_generations", 0) + sum(a.strip() == "" for a in answers)
        evaluation.samples.append({
            "task": task.name,
            "doc_id": doc.id,
            "prompt": getattr(requests[0], "context", None),
            "request_keys": [r.key for r in requests],
            "target": task.target(doc),
            "response": [answer_to_json(a) for a in answers],
            "scores": scores,
        })
        if clusters[task.name] is not None:  # the unit its stderr was clustered on, for whoever rechecks it
            evaluation.samples[-1]["cluster"] = cluster

    for name in task_names:
        evaluation.results[name] = aggregate_scores(per_task_scores[name], built[name].metrics, seed, clusters[name])
    for group_name, group in (groups or {}).items():
        evaluation.results[group_name] = group_result(group, built, evaluation.results, per_task_scores, clusters,
                                                      seed)
    return evaluation


def answer_in_rounds(model: LanguageModel, planned: list[tuple[Task, Doc, list]], batch_size: int | None, seed: int,
                     prompt_format: PromptFormat, rendered: dict[Prompt, str], evaluation: Evaluation) -> list[list]:
    """The answers to each planned document's requests. A document whose task asks more once it has answers (the
    second turn of a conversation, which reads the model's first answer: Task.follow_up) gets its next requests
    in a later round, all documents' together, until no task asks more; `planned` then lists every request sent,
    in order, beside its answers."""
    answers_of: list[list] = [[] for _ in planned]
    asking = [(index, requests) for index, (_, _, requests) in enumerate(planned)]
    while asking:
        sent = [request for _, requests in asking for request in requests]
        responses = run_requests(model, sent, batch_size, seed,
                                 [planned[i][0].name for i, requests in asking for _ in requests],
                                 [planned[i][1].id for i, requests in asking for _ in requests])
        position, follow = 0, []
        for index, requests in asking:
            task, doc, earlier = planned[index]
            answers_of[index] += responses[position:position + len(requests)]
            position += len(requests)
            if earlier is not requests:
                planned[index] = (task, doc, earlier + requests)
            more = [render(r, model, prompt_format, rendered) for r in task.follow_up(doc, answers_of[index])]
            if more:
                record = evaluation.task_records[task.name]
                record["truncated_requests"] += sum(model.truncates(r) for r in more)
                follow.append((index, more))
        asking = follow
    return answers_of


def cluster_ids(declared: list[str | None], docs: list[Doc]) -> list | None:
    """The cluster of each of a task's documents for the statistics, or None when the task declares none (its
    documents are independent). A document the task leaves without a cluster among clustered ones is its own."""
    if all(cluster is None for cluster in declared):
        return None
    return [("doc", doc.id) if cluster is None else cluster for cluster, doc in zip(declared, docs)]


def group_result(group: Group, built: dict[str, Task], results: dict[str, dict], per_task_scores: dict[str, list],
                 clusters: dict[str, list | None], seed: int) -> dict:
    """A group's row, from its tasks' results and samples (docs/statistics.md)."""
    members = group.members
    if group.aggregation == "macro":
        scores, stderrs = zip(*(built[m].headline(results[m]) for m in members))
        value, stderr = stats.macro_average(scores, stderrs)
        # Its stderr combines independent tasks' stderrs: no single sample (or df) behind it, so a normal interval.
        result = {"n": sum(results[m]["n"] for m in members), "score": value, "score_stderr": stderr,
                  "score_ci95": as_list(stats.normal_interval(value, stderr))}
    else:
        # Pooling every question weights each task by its size, as lm-eval's MMLU groups do. A clustered task's
        # clusters stay its own (task names keep equal ids of two tasks apart).
        pooled = [s for member in members for s in per_task_scores[member]]
        pooled_clusters = None
        if any(clusters[member] is not None for member in members):
            pooled_clusters = [(member, c) for member in members
                               for c in clusters[member] or range(len(per_task_scores[member]))]
        metrics = built[members[0]].metrics
        result = aggregate_scores(pooled, metrics, seed, pooled_clusters)
        for metric in metrics:
            if metric.aggregation != "mean":
                continue  # a bootstrap aggregate keeps the bootstrap over the pooled samples
            # Each task is a stratum the group always contains in full; only documents within it are sampled.
            stderr = stats.stratified_stderr([results[m]["n"] for m in members],
                                             [results[m].get(metric.name + "_stderr") for m in members])
            values = [s[metric.name] for s in pooled]
            result[metric.name + "_stderr"] = stderr
            result[metric.name + "_ci95"] = as_list(stats.normal_interval(result[metric.name], stderr,
                                                                          stats.in_unit_interval(values)))
    result["members"] = members
    result["aggregation"] = group.aggregation
    return result


def refuse_what_the_model_cannot_answer(model: LanguageModel, planned: list[tuple[Task, Doc, list]]) -> None:
    """A model behind a server may lack a capability (prompt log-probabilities): say so before any work."""
    asked: set[tuple[str, type]] = set()
    for task, _, requests in planned:
        for request in requests:
            if (task.name, type(request)) not in asked:
                asked.add((task.name, type(request)))
                missing = model.cannot_answer(request)
                if missing:
                    raise CapabilityMissing(f"{task.name} needs {missing}")


def render(request: Request, model: LanguageModel, prompt_format: PromptFormat,
           cache: dict[Prompt, str] | None = None) -> Request:
    """The request as the model will see it: its Prompt written out as plain text or through the chat template,
    and a generation's max_tokens capped by prompt_format.max_new_tokens. With a chat template, a multiple-choice
    continuation loses its leading delimiter (the reply starts a new assistant turn), as lm-eval does. `cache`
    keeps each prompt's text for the other choices of its question."""
    cap = prompt_format.max_new_tokens
    if isinstance(request, GenerateRequest) and cap is not None and request.max_tokens > cap:
        request = replace(request, max_tokens=cap)
    context = getattr(request, "context", None)
    if not isinstance(context, Prompt):
        return request
    cache = {} if cache is None else cache
    if context not in cache:
        if prompt_format.chat_template:
            messages = context.messages(prompt_format.system_prompt, prompt_format.fewshot_as_multiturn)
            cache[context] = model.apply_chat_template(messages)
        else:
            cache[context] = context.text(prompt_format.system_prompt)
    text = cache[context]
    if not prompt_format.chat_template:
        return replace(request, context=text)
    if isinstance(request, LoglikelihoodRequest):
        return replace(request, context=text, continuation=request.continuation.removeprefix(context.target_delimiter))
    return replace(request, context=text)


# Requests of one kind sent to the model in one call: the unit of work that ranks share under torchrun, and that a
# caching model stores in one commit (what a kill can lose at most). The chunks are cut from each task's whole
# request list, the same way every time, so a resumed run computes its missing chunks exactly as the interrupted
# one would have (same batches, same float results).
COMMIT_EVERY = {LoglikelihoodRequest: 1024, RollingLoglikelihoodRequest: 8, GenerateRequest: 32}


def commit_every(kind: type) -> int:
    override = os.environ.get("HARNESS_COMMIT_EVERY")  # the kill-and-resume tests want many small chunks
    return int(override) if override else COMMIT_EVERY[kind]


def run_requests(model: LanguageModel, requests: list, batch_size: int | None, seed: int,
                 task_of: list[str] | None = None, doc_of: list[str] | None = None) -> list[Any]:
    """Responses in request order. Each kind of request goes to the model's method for it, one call per task and
    chunk, inside model.working_on(task) (results do not depend on batching). Under torchrun, each rank answers
    every N-th chunk and all answers are gathered (harness/engine/distributed.py)."""
    task_of = task_of or [""] * len(requests)
    doc_of = doc_of or ["?"] * len(requests)
    by_kind: dict[type, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for index, request in enumerate(requests):
        by_kind[type(request)][task_of[index]].append(index)
    # A sampled generation's random stream counts the identical requests before it in its task.
    occurrences: dict[int, int] = {}
    for by_task in by_kind.values():
        for indices in by_task.values():
            seen: Counter = Counter()
            for index in indices:
                occurrences[index] = seen[requests[index].key]
                seen[requests[index].key] += 1
    steps = {kind: commit_every(kind) for kind in by_kind}
    chunks = [(kind, task, indices[start:start + steps[kind]])
              for kind, by_task in by_kind.items() for task, indices in by_task.items()
              for start in range(0, len(indices), steps[kind])]
    rank, size = distributed.rank_and_size()
    mine = [chunk for number, chunk in enumerate(chunks) if number % size == rank]
    answered: dict[int, Any] = {}
    for kind in by_kind:
        method = method_for(model, kind)
        of_kind = [(task, chunk) for k, task, chunk in mine if k is kind]
        with tqdm(total=sum(len(chunk) for _, chunk in of_kind), desc=method.__name__, unit="req",
                  dynamic_ncols=True, disable=rank != 0) as bar:
            for task in dict.fromkeys(task for task, _ in of_kind):
                with model.working_on(task):
                    for chunk in [chunk for t, chunk in of_kind if t == task]:
                        try:
                            answers = method([requests[i] for i in chunk], batch_size=batch_size,
                                             progress=bar.update, seed=seed,
                                             occurrences=[occurrences[i] for i in chunk])
                        except CapabilityMissing as error:
                            raise CapabilityMissing(f"{task} needs {error}") from None
                        refuse_non_finite(task, [requests[i] for i in chunk], [doc_of[i] for i in chunk], answers)
                        answered.update(zip(chunk, answers))
    answered = distributed.gather(answered)
    return [answered[index] for index in range(len(requests))]


def refuse_non_finite(task: str, requests: list, docs: list[str], answers: list) -> None:
    """Stops the run at the first NaN or infinite log-probability, naming where: scored, it would read as a
    choice (the argmax of NaNs is the first) or poison a mean, and the run would look valid."""
    for request, doc, answer in zip(requests, docs, answers):
        value = non_finite(answer)
        if value is not None:
            raise UserError(f"{task}, document {doc}: the model gave a log-probability of {value} for request "
                            f"{request.key} ({request.kind}); the weights or the dtype are broken (an fp16 "
                            "overflow?), and nothing of this run is written as a result")


def tied_choices(answers: list) -> bool:
    """Whether a document's most likely answers tie exactly (two or more loglikelihoods at the maximum): the
    argmax then takes the first, as lm-eval's np.argmax does, and the record counts how often that decided."""
    logprobs = [a.logprob for a in answers if isinstance(a, LoglikelihoodResult)]
    return len(logprobs) > 1 and logprobs.count(max(logprobs)) > 1


def aggregate_scores(scores: list[dict], metrics, seed: int, clusters: list | None = None) -> dict:
    """{"n", and per metric: its value, "<metric>_stderr" and "<metric>_ci95" ([low, high] or None)}; `clusters`,
    one id per score, makes the stderrs and intervals clustered."""
    result: dict[str, Any] = {"n": len(scores)}
    for metric in metrics:
        values = [s[metric.name] for s in scores]
        value, stderr, interval = stats.aggregate(metric.aggregation, values, seed, clusters)
        result[metric.name], result[metric.name + "_stderr"] = value, stderr
        result[metric.name + "_ci95"] = as_list(interval)
    return result


def as_list(interval: tuple[float, float] | None) -> list[float] | None:
    """An interval as results.json keeps it (a JSON array), so that a record read back equals the one written."""
    return None if interval is None else [interval[0], interval[1]]


def describe_task(task: Task, total_docs: int, used_docs: int, requests: list[Request]) -> dict:
    """What decides the task's numbers, for the run record. `requests` are the task's requests as rendered and
    sent, in order: the prompt hash covers every field of every one (text, continuation, stop strings, max tokens,
    temperature, top_p), so nothing the model is asked can change while the hash that the gate and the results
    store trust stays the same. The task's settings enter it too: a scorer (toxicity) decides numbers without
    being part of any request."""
    digest = hashlib.sha256()
    for request in requests:
        digest.update(request.key.encode("ascii"))
    digest.update(json.dumps(task.settings(), sort_keys=True, ensure_ascii=False).encode("utf-8"))
    record = {
        "version": task.version,
        "num_fewshot": task.num_fewshot,
        "fewshot_ids": task.fewshot_ids(),
        "prompt_hash": digest.hexdigest()[:16],
        "data_sha256": {Path(p).name: sha256_file(p) for p in task.data_files()},
        **task.settings(),
        "docs_total": total_docs,
        "docs_evaluated": used_docs,
        "metrics": {m.name: {"aggregation": m.aggregation, "higher_is_better": m.higher_is_better}
                    for m in task.metrics},
    }
    breakdown = task.breakdown()
    if breakdown is not None:  # reports build its table from the record alone (reports/report.py)
        record["breakdown"] = breakdown
    return record


def answer_to_json(answer: Any) -> Any:
    if hasattr(answer, "logprob"):
        return {"logprob": answer.logprob, "is_greedy": answer.is_greedy}
    return answer


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
