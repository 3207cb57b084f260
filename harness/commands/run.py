"""`harness run`: evaluate a model on tasks and write a run folder, from a RunConfig (harness/config.py);
`resume(folder)` finishes an interrupted run; `rerun(folder)` runs a finished one again and checks that it gives the
same scores.

A run folder is made once the model has loaded, holding only run.json (the configuration). Responses go to the
response cache (harness/engine/cache.py) as they are computed, and the results are written at the end
(harness/record/run_folder.py). A run killed at any point resumes from its folder with nothing stored recomputed;
Ctrl-C stops it the same way and says how to resume. Bad input is refused before any folder is made.
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

import tasks as task_registry
from harness import __version__
from harness.commands.summary import print_summary
from harness.config import RunConfig
from harness.engine import distributed
from harness.engine.cache import CachingModel, ResponseCache
from harness.engine.evaluator import Group, PromptFormat, evaluate
from harness.engine.model import LanguageModel
from harness.engine.model_judge import ModelJudge
from harness.engine.task import TaskOptions
from harness.errors import UserError
from harness.models.adapter import MAX_BATCH_POSITIONS
from harness.models.registry import check_decoding, load_model, parse_spec
from harness.record.run_folder import (
    INVOCATION,
    check_output_folder,
    environment,
    read_run,
    remove_run,
    start_run,
    write_run,
)
from harness.record.store import ResultsStore
from harness.robustness.analysis import analyse
from harness.robustness.variants import perturbed_variants
from harness.sandbox.process import make_sandbox, runner_with_progress
from harness.systems.hardware import hardware_context
from harness.systems.profiler import Profiler
from harness.toxicity import make_scorer
from tasks.base import require_file


def default_output(spec: str, started: datetime) -> Path:
    return Path("runs") / f"{started:%Y%m%d-%H%M%S}-{re.sub(r'[^A-Za-z0-9.-]+', '_', spec)}"


def per_task_limits(pairs: tuple[str, ...], task_names: list[str]) -> dict[str, int]:
    """{task: N} from --limit's "NAME=N" pairs, a group's N given to each of its tasks; a name the run does not
    evaluate is refused (a typo would otherwise evaluate everything)."""
    limits: dict[str, int] = {}
    for pair in pairs:
        name, _, count = pair.rpartition("=")
        members = task_registry.expand([name])
        if not set(members) <= set(task_names):
            raise UserError(f"--limit names {name}, which is not among --tasks")
        limits.update({member: int(count) for member in members})
    return limits


def run(config: RunConfig, command: str, resumed: bool = False) -> int:
    """Evaluates config.model on config.tasks into config.output.folder. `command` is how the user asked (for the
    record); `resumed`: the folder exists and holds run.json, and the cache holds what was done."""
    # Everything that can be checked before loading the model is checked first.
    task_names = task_registry.expand(list(config.tasks.names))
    limits = per_task_limits(config.tasks.limits, task_names)
    check_decoding(config.model.spec, config.engine.speculative, config.engine.kv_cache)
    started = datetime.now(UTC)
    output = config.output.folder or default_output(config.model.spec, started)
    config = config.replace(output={"folder": output})
    device = distributed.start(config.model.device)  # under torchrun: join the other ranks (and take this rank's GPU)
    rank, world_size = distributed.rank_and_size()
    existed = True
    if not resumed and rank == 0:  # rank 0 alone writes the run
        existed = check_output_folder(output)
    if config.tasks.data_dir is not None and not config.tasks.data_dir.is_dir():
        raise UserError(f"--data-dir {config.tasks.data_dir} is not a folder")
    if config.judge.spec is not None:
        parse_spec(config.judge.spec)  # a malformed judge spec fails now, not after the answers
    sandbox = make_sandbox(config.sandbox) if config.sandbox.allow_code_execution else None
    toxicity = config.toxicity
    judges: list[ModelJudge] = []

    def judge() -> ModelJudge:  # loaded when a judged task first asks for it: no other run loads a second model
        if not judges:
            judges.append(make_judge(config, model, device, profiler))
        return judges[0]

    options = TaskOptions(num_fewshot=config.tasks.num_fewshot, data_dir=config.tasks.data_dir,
                          samples=config.tasks.samples, temperature=config.tasks.temperature,
                          fewshot_seed=config.engine.seed,
                          run_programs=runner_with_progress(sandbox) if sandbox else None,
                          toxicity_scorer=functools.cache(lambda: make_scorer(
                              toxicity.scorer, toxicity.checkpoint, toxicity.hf_config, config.model.device)),
                          judge=judge, judge_max_failures=config.judge.max_failures,
                          judge_scoring=config.judge.scoring)
    built_tasks = [task_registry.build(name, options) for name in task_names]
    refuse_mismatched_prompts(config, built_tasks)
    # Each perturbation of each task is a task of its own, run beside the clean one and paired with it at the end.
    variants = perturbed_variants(built_tasks, config.tasks.perturb, config.engine.seed)
    for clean, variant, _ in variants:
        if clean.name in limits:
            limits[variant.name] = limits[clean.name]
    for task in built_tasks:  # a bad few-shot count or missing data fails now, not after other tasks ran
        task.docs()
        for path in task.data_files():
            require_file(path)
    groups = {name: Group(members, task_registry.GROUP_AGGREGATION.get(name, "pooled"))
              for name, members in task_registry.groups_covering(task_names).items()}
    prompt_format = PromptFormat(chat_template=config.prompts.chat_template,
                                 system_prompt=config.prompts.system_prompt,
                                 fewshot_as_multiturn=config.prompts.fewshot_as_multiturn,
                                 max_new_tokens=config.engine.max_new_tokens)

    clock = time.perf_counter()
    torch.manual_seed(config.engine.seed)
    # Every run is profiled: the profiler times the model's batches (never task code) and costs well under 2 %.
    profiler = Profiler(torch.device(device))
    adapter = load_model(config.model.spec, device=device, dtype=config.model.dtype,
                         max_length=config.model.max_length, revision=config.model.revision, profiler=profiler,
                         progress=lambda message: print(message, file=sys.stderr),
                         speculative=config.engine.speculative, kv_cache=config.engine.kv_cache)
    model = CachingModel(adapter, ResponseCache(), prompt_format.describe(adapter)) if config.engine.use_cache \
        else adapter
    invocation = {"config": config.to_json(), "command": command, "cwd": str(Path.cwd()),
                  "created": started.isoformat()}
    if not resumed and rank == 0:
        start_run(output, invocation)
    profiler.start()
    try:
        evaluation = evaluate(model, built_tasks + [variant for _, variant, _ in variants], limit=config.tasks.limit,
                              batch_size=config.engine.batch_size, seed=config.engine.seed,
                              prompt_format=prompt_format, groups=groups, limits=limits)
        code_execution = sandbox.describe() if sandbox else None
    except KeyboardInterrupt:
        if isinstance(model, CachingModel):
            print(f"\nharness: interrupted; {sum(model.computed.values())} new responses are in the response "
                  f"cache; resume with: harness run --resume {output}", file=sys.stderr)
        else:
            print("\nharness: interrupted; with --no-cache nothing was kept; run the command again", file=sys.stderr)
        return 130
    except UserError:
        if not resumed and rank == 0:  # bad input found during the run: leave nothing behind
            remove_run(output, existed)
        raise
    finally:
        profiler.stop()
        if sandbox:
            sandbox.close()
        if judges and judges[0].model is not model:
            judges[0].model.close()
        model.close()
    if rank != 0:  # its answers went to rank 0, which scores them and writes the run
        distributed.finish()
        return 0
    distributed.finish()
    cache = {"path": str(model.store.path), "hits": dict(model.hits), "computed": dict(model.computed)} \
        if isinstance(model, CachingModel) else None
    record = {
        "harness_version": __version__,
        "created": started.isoformat(),
        "command": command,
        "invocation": {key: value for key, value in invocation.items() if key != "config"},  # config: below
        "config": invocation["config"],
        "model": {"spec": config.model.spec, "fingerprint": adapter.fingerprint, **adapter.info()},
        "settings": {
            "tasks": task_names, "limit": config.tasks.limit, "limits": limits, "num_fewshot": config.tasks.num_fewshot,
            "batch_size": config.engine.batch_size or "auto",
            "batch_policy": f"longest first, at most {MAX_BATCH_POSITIONS} positions a batch",
            "device": config.model.device, "dtype": config.model.dtype, "seed": config.engine.seed,
            "speculative": config.engine.speculative, "kv_cache": config.engine.kv_cache,
            "max_new_tokens": config.engine.max_new_tokens, "perturb": list(config.tasks.perturb),
            "data_dir": str(config.tasks.data_dir) if config.tasks.data_dir else None,
            **prompt_format.describe(adapter),
            "samples": config.tasks.samples, "temperature": config.tasks.temperature,
            "code_execution": code_execution,
            "response_cache": cache,
            "resumed": resumed,
            # Under torchrun the systems figures and cache counts are rank 0's share of the work.
            "data_parallel": {"world_size": world_size} if world_size > 1 else None,
        },
        "judge": judges[0].record() if judges else None,
        "tasks": evaluation.task_records,
        "results": evaluation.results,
        "robustness": analyse([(clean.name, variant.name, perturbation) for clean, variant, perturbation in variants],
                              evaluation.task_records, evaluation.samples, config.engine.seed) if variants else None,
        "systems": profiler.summary(),
        "environment": {**environment(), "hardware": hardware_context(adapter.device, adapter.dtype)},
        "wall_seconds": round(time.perf_counter() - clock, 3),
    }
    folder = write_run(output, record, evaluation.samples)
    try:  # the run folder is the record; the store is an index of them, and failing it loses nothing
        results_store = ResultsStore(config.output.results_db)
        results_store.record(folder)
        results_store.close()
    except (OSError, sqlite3.Error) as error:
        print(f"warning: the run was not added to the results store: {error}", file=sys.stderr)
    print_summary(record, evaluation.task_records, cache)
    print(f"results: {folder}")
    return 0


def refuse_mismatched_prompts(config: RunConfig, built_tasks: list) -> None:
    """A chat benchmark without the chat template, or a judge without a judged task: one line, before any work."""
    chat_only = [task.name for task in built_tasks if task.needs_chat_template]
    if chat_only and not config.prompts.chat_template:
        raise UserError(f"{chat_only[0]} is a conversation: its turns are written through the model's chat template; "
                        "add --apply-chat-template")
    if config.judge.spec is not None and not any(task.needs_judge for task in built_tasks):
        raise UserError("--judge applies to judged tasks (mt_bench), and none is among --tasks")


def make_judge(config: RunConfig, evaluated: LanguageModel, device: str, profiler: Profiler) -> ModelJudge:
    """The run's judge: the evaluated model itself unless --judge names another, which loads on the same device and
    profiler, with its own entries in the response cache."""
    spec = config.judge.spec
    if spec is None or spec == config.model.spec:
        judge_model = evaluated
    else:
        try:
            adapter = load_model(spec, device=device, dtype=config.model.dtype, profiler=profiler,
                                 progress=lambda message: print(message, file=sys.stderr))
        except UserError as error:
            raise UserError(f"--judge {spec}: {error}") from None
        judge_model = CachingModel(adapter, ResponseCache(), PromptFormat(chat_template=True).describe(adapter)) \
            if config.engine.use_cache else adapter
    return ModelJudge(judge_model, batch_size=config.engine.batch_size, seed=config.engine.seed,
                      max_new_tokens=config.engine.max_new_tokens)


def recorded_config(folder: Path, file: str) -> tuple[RunConfig, str]:
    """The configuration and command recorded in folder/file (run.json, or results.json of a finished run)."""
    try:
        recorded = json.loads((folder / file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{folder / file} is damaged ({error}); start the run again") from None
    if not isinstance(recorded, dict) or "config" not in recorded:
        raise UserError(f"{folder} was made by an older harness that did not record its configuration; run its "
                        "command again")
    try:
        return RunConfig.from_json(recorded["config"]), recorded.get("command", "")
    except UserError as error:
        raise UserError(f"{folder / file}: {error}") from None


def resume(folder: Path) -> int:
    """Finishes an interrupted run into its own folder, computing only what the response cache lacks."""
    if (folder / "results.json").is_file():
        raise UserError(f"{folder} is a finished run; nothing to resume (`harness rerun {folder}` runs it again)")
    if not (folder / INVOCATION).is_file():
        raise UserError(f"{folder} is not an interrupted run folder: it has no {INVOCATION}")
    config, command = recorded_config(folder, INVOCATION)
    if not config.engine.use_cache:
        raise UserError(f"{folder} was run with --no-cache, so nothing was kept to resume from; run it again")
    return run(config.replace(output={"folder": folder}), command, resumed=True)


def rerun(folder: Path, output: Path | None) -> int:
    """Runs a finished run's configuration again, into a new folder and without the cache, and compares every
    sample's scores with the original's."""
    _, original_samples = read_run(folder)
    config, command = recorded_config(folder, "results.json")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    output = output or folder.parent / f"{folder.name}-rerun-{stamp}"
    code = run(config.replace(output={"folder": output}, engine={"use_cache": False}), f"harness rerun {folder}")
    if code:
        return code
    _, samples = read_run(output)
    scores = lambda rows: [(s["task"], s["doc_id"], s["scores"]) for s in rows]
    differing = [a for a, b in zip(scores(original_samples), scores(samples)) if a != b]
    if len(samples) != len(original_samples) or differing:
        print(f"NOT reproduced: {len(differing)} of {len(samples)} samples score differently from {folder}")
        return 1
    print(f"reproduced: all {len(samples)} samples score exactly as in {folder}")
    return 0
