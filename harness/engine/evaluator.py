"""The evaluator: the one place that knows tasks, requests and models together.

For each task it takes the documents (the first `limit`), asks the task for requests, renders their prompts (plain,
or through the model's chat template), sends each task's requests of one kind to the adapter in one batched call
(so that the profiler can time each task), hands the responses back to the tasks for per-sample scores, and
aggregates them per task and per group.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

import tasks as task_registry
from harness.engine import cache as response_cache
from harness import stats
from harness.engine import distributed
from harness.engine.cache import ResponseCache
from harness.errors import CapabilityMissing
from harness.models.adapter import ModelAdapter
from harness.engine.prompts import Prompt
from harness.engine.requests import GenerateRequest, LoglikelihoodRequest, Request, RollingLoglikelihoodRequest
from tasks.base import Doc, Task

ADAPTER_METHODS = {
    LoglikelihoodRequest: "loglikelihood",
    RollingLoglikelihoodRequest: "loglikelihood_rolling",
    GenerateRequest: "generate_until",
}


@dataclass(frozen=True)
class PromptFormat:
    """How prompts become text: as plain text (the default), or through the model's chat template."""

    chat_template: bool = False
    system_prompt: str | None = None
    fewshot_as_multiturn: bool = True  # with a chat template: each example its own user and assistant turn

    def describe(self, adapter: ModelAdapter) -> dict:
        template = adapter.chat_template if self.chat_template else None
        return {
            "chat_template": self.chat_template,
            "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest() if template else None,
            "system_prompt": self.system_prompt,
            "fewshot_as_multiturn": self.fewshot_as_multiturn if self.chat_template else None,
        }


@dataclass
class Evaluation:
    task_records: dict[str, dict] = field(default_factory=dict)  # what decides each task's numbers
    results: dict[str, dict] = field(default_factory=dict)  # task or group -> metric values, stderrs, n
    samples: list[dict] = field(default_factory=list)  # one per scored document


def evaluate(adapter: ModelAdapter, tasks: list[Task], limit: int | None = None, batch_size: int | None = 1,
             seed: int = 0, prompt_format: PromptFormat = PromptFormat(), cache: CacheUse | None = None
             ) -> Evaluation:
    """Runs the tasks (built by tasks.build) on the adapter's model; with `cache`, through the response cache."""
    evaluation = Evaluation()
    planned: list[tuple[Task, Doc, list]] = []
    built = {task.name: task for task in tasks}
    task_names = list(built)
    rendered: dict[Prompt, str] = {}
    for name, task in built.items():
        docs = task.docs()
        selected = docs[:limit]
        mine = [(task, doc, [render(r, adapter, prompt_format, rendered) for r in task.requests(doc)])
                for doc in selected]
        planned += mine
        evaluation.task_records[name] = describe_task(task, len(docs), len(selected))
        # Prompts longer than the model's window are cut from the left, not refused: the record says how many.
        evaluation.task_records[name]["truncated_requests"] = sum(adapter.truncates(r) for *_, rs in mine for r in rs)

    refuse_what_the_model_cannot_answer(adapter, planned)
    responses = run_requests(adapter, [r for _, _, requests in planned for r in requests], batch_size, seed,
                             [task.name for task, _, requests in planned for _ in requests], cache)
    if distributed.rank_and_size()[0] != 0:  # under torchrun, rank 0 alone scores and writes
        return evaluation

    # Each task scores all its documents in one call (a sandbox or a classifier works in batches).
    answers_of: list[list] = []
    answered: dict[str, list[tuple[Doc, list]]] = defaultdict(list)
    position = 0
    for task, doc, requests in planned:
        answers_of.append(responses[position:position + len(requests)])
        answered[task.name].append((doc, answers_of[-1]))
        position += len(requests)
    per_task_scores = {name: built[name].score_all(answered[name]) for name in task_names}

    scored = {name: iter(scores) for name, scores in per_task_scores.items()}
    for (task, doc, requests), answers in zip(planned, answers_of):
        scores = next(scored[task.name])
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

    for name in task_names:
        evaluation.results[name] = aggregate_scores(per_task_scores[name], built[name].metrics, seed)
    for group, members in task_registry.groups_covering(task_names).items():
        aggregation = task_registry.GROUP_AGGREGATION.get(group, "pooled")
        if aggregation == "macro":
            scores, stderrs = zip(*(built[m].headline(evaluation.results[m]) for m in members))
            value, stderr = stats.macro_average(scores, stderrs)
            result = {"n": sum(evaluation.results[m]["n"] for m in members), "score": value, "score_stderr": stderr}
        else:
            # Pooling every question weights each task by its size, as lm-eval's MMLU groups do.
            pooled = [s for member in members for s in per_task_scores[member]]
            result = aggregate_scores(pooled, built[members[0]].metrics, seed)
        result["members"] = members
        result["aggregation"] = aggregation
        evaluation.results[group] = result
    return evaluation


def refuse_what_the_model_cannot_answer(adapter: ModelAdapter, planned: list[tuple[Task, Doc, list]]) -> None:
    """A model behind a server may lack a capability (prompt log-probabilities): say so before any work."""
    cannot_answer = getattr(adapter, "cannot_answer", None)
    if cannot_answer is None:
        return
    asked: set[tuple[str, type]] = set()
    for task, _, requests in planned:
        for request in requests:
            if (task.name, type(request)) not in asked:
                asked.add((task.name, type(request)))
                missing = cannot_answer(request)
                if missing:
                    raise CapabilityMissing(f"{task.name} needs {missing}")


def render(request: Request, adapter: ModelAdapter, prompt_format: PromptFormat,
           cache: dict[Prompt, str] | None = None) -> Request:
    """The request as the model will see it: its Prompt written out as plain text or through the chat template.
    With a chat template, a multiple-choice continuation loses its leading delimiter (the reply starts a new
    assistant turn), as lm-eval does. `cache` keeps each prompt's text for the other choices of its question."""
    context = getattr(request, "context", None)
    if not isinstance(context, Prompt):
        return request
    cache = {} if cache is None else cache
    if context not in cache:
        if prompt_format.chat_template:
            messages = context.messages(prompt_format.system_prompt, prompt_format.fewshot_as_multiturn)
            cache[context] = adapter.apply_chat_template(messages)
        else:
            cache[context] = context.text(prompt_format.system_prompt)
    text = cache[context]
    if not prompt_format.chat_template:
        return replace(request, context=text)
    if isinstance(request, LoglikelihoodRequest):
        return replace(request, context=text, continuation=request.continuation.removeprefix(context.target_delimiter))
    return replace(request, context=text)


@dataclass
class CacheUse:
    """The response cache as one run uses it: the store, this run's model key, and what it found per task."""

    store: ResponseCache
    model: str
    hits: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    computed: dict[str, int] = field(default_factory=lambda: defaultdict(int))


# Requests of one kind sent to the model between two commits to the cache: what a kill can lose at most. The
# chunks are cut from each task's whole request list, the same way every time, so a resumed run computes its
# missing chunks exactly as the interrupted one would have (same batches, same float results).
COMMIT_EVERY = {LoglikelihoodRequest: 1024, RollingLoglikelihoodRequest: 8, GenerateRequest: 32}


def commit_every(kind: type) -> int:
    override = os.environ.get("HARNESS_COMMIT_EVERY")  # the kill-and-resume tests want many small chunks
    return int(override) if override else COMMIT_EVERY[kind]


def run_requests(adapter: ModelAdapter, requests: list, batch_size: int | None, seed: int,
                 task_of: list[str] | None = None, cache: CacheUse | None = None) -> list[Any]:
    """Responses in request order. Each kind of request goes to its adapter method, one call per task and chunk
    (so that the profiler, when the adapter has one, can say what each task cost; results do not depend on
    batching). With `cache`, stored responses are reused and each chunk's new ones stored as it ends. Under
    torchrun, each rank answers every N-th chunk and all answers are gathered (harness/engine/distributed.py)."""
    task_of = task_of or [""] * len(requests)
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
        method = ADAPTER_METHODS[kind]
        of_kind = [(task, chunk) for k, task, chunk in mine if k is kind]
        with tqdm(total=sum(len(chunk) for _, chunk in of_kind), desc=method, unit="req", dynamic_ncols=True,
                  disable=rank != 0) as bar:
            for task in dict.fromkeys(task for task, _ in of_kind):
                scope = adapter.profiler.task(task) if adapter.profiler and task else nullcontext()
                with scope:
                    for chunk in [chunk for t, chunk in of_kind if t == task]:
                        try:
                            answers = answer_chunk(adapter, method, [requests[i] for i in chunk],
                                                   [occurrences[i] for i in chunk], batch_size, seed, bar, task,
                                                   cache)
                        except CapabilityMissing as error:
                            raise CapabilityMissing(f"{task} needs {error}") from None
                        answered.update(zip(chunk, answers))
    answered = distributed.gather(answered)
    return [answered[index] for index in range(len(requests))]


def answer_chunk(adapter: ModelAdapter, method: str, chunk: list, occurrences: list[int], batch_size: int | None,
                 seed: int, bar, task: str, cache: CacheUse | None) -> list[Any]:
    """The chunk's responses: from the cache where stored, from the model otherwise (then stored, in one
    commit). A stored response is never recomputed."""

    def compute(positions: list[int]) -> list[Any]:
        extra = {"seed": seed, "occurrences": [occurrences[p] for p in positions]} if method == "generate_until" \
            else {}
        return getattr(adapter, method)([chunk[p] for p in positions], batch_size=batch_size, progress=bar.update,
                                        **extra)

    if cache is None:
        return compute(list(range(len(chunk))))
    keys = [response_cache.request_key(request, seed, o) for request, o in zip(chunk, occurrences)]
    stored = cache.store.get_many(cache.model, keys)
    answers = [response_cache.decode(request, stored[key]) if key in stored else None
               for request, key in zip(chunk, keys)]
    missing = [position for position, key in enumerate(keys) if key not in stored]
    bar.update(len(chunk) - len(missing))
    if missing:
        for position, answer in zip(missing, compute(missing)):
            answers[position] = answer
        cache.store.put_many(cache.model, [(keys[p], response_cache.encode(answers[p])) for p in missing])
    cache.hits[task] += len(chunk) - len(missing)
    cache.computed[task] += len(missing)
    return answers


def aggregate_scores(scores: list[dict], metrics, seed: int) -> dict:
    result: dict[str, Any] = {"n": len(scores)}
    for metric in metrics:
        values = [s[metric.name] for s in scores]
        result[metric.name], result[metric.name + "_stderr"] = stats.aggregate(metric.aggregation, values, seed)
    return result


def describe_task(task: Task, total_docs: int, used_docs: int) -> dict:
    return {
        "version": task.version,
        "num_fewshot": task.num_fewshot,
        "fewshot_ids": task.fewshot_ids(),
        "prompt_hash": task.prompt_hash(),
        "data_sha256": {Path(p).name: sha256_file(p) for p in task.data_files()},
        **task.settings(),
        "docs_total": total_docs,
        "docs_evaluated": used_docs,
        "metrics": {m.name: {"aggregation": m.aggregation, "higher_is_better": m.higher_is_better}
                    for m in task.metrics},
    }


def answer_to_json(answer: Any) -> Any:
    if hasattr(answer, "logprob"):
        return {"logprob": answer.logprob, "is_greedy": answer.is_greedy}
    return answer


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
