"""`harness run`: evaluate a model on tasks and write a run folder; `harness run --resume RUN_DIR` finishes an
interrupted one; `harness rerun RUN_DIR` runs a finished one again and checks that it gives the same scores.

A run folder is made once the model has loaded, holding only run.json (the command). Responses go to the response
cache (harness/engine/cache.py) as they are computed, and the results are written at the end (harness/record/run_folder.py). A run
killed at any point resumes from its folder with nothing stored recomputed; Ctrl-C stops it the same way and says
how to resume. Bad input is refused before any folder is made.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import sqlite3
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from harness.engine import distributed
from harness.errors import UserError


def make_sandbox(args):
    from harness.sandbox.process import Limits, Sandbox

    if args.code_timeout <= 0:
        raise UserError("--code-timeout must be more than 0 seconds")
    return Sandbox(Limits(timeout_s=args.code_timeout), workers=args.code_workers)


def resumed_arguments(args, argv: list[str]):
    """The recorded command of the run in args.resume, to finish into that same folder."""
    from harness.cli import build_parser
    from harness.record.run_folder import INVOCATION

    folder = args.resume
    extra = [a for a in argv if a not in ("run", "--resume", str(folder), "--debug")]
    if extra:
        raise UserError(f"--resume takes every setting from {folder / INVOCATION}; give it alone, not with "
                        f"{extra[0]}")
    if (folder / "results.json").is_file():
        raise UserError(f"{folder} is a finished run; nothing to resume (`harness rerun {folder}` runs it again)")
    if not (folder / INVOCATION).is_file():
        raise UserError(f"{folder} is not an interrupted run folder: it has no {INVOCATION}")
    try:
        invocation = json.loads((folder / INVOCATION).read_text(encoding="utf-8"))
        recorded = invocation["argv"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise UserError(f"{folder / INVOCATION} is damaged ({error}); start the run again") from None
    resumed = build_parser().parse_args(recorded)
    resumed.output, resumed.resume, resumed.debug = folder, folder, args.debug
    return resumed, recorded


def run_command(args, argv: list[str]) -> int:
    import torch

    import tasks as task_registry
    from harness import __version__
    from harness.engine.cache import ResponseCache, model_key
    from harness.engine.evaluator import CacheUse, PromptFormat, evaluate
    from harness.systems.hardware import hardware_context
    from harness.models.adapter import MAX_BATCH_POSITIONS
    from harness.models.registry import load_model, parse_spec
    from harness.systems.profiler import Profiler
    from harness.record.run_folder import check_output_folder, environment, start_run, write_run
    from harness.sandbox.process import runner_with_progress
    from harness.record.store import ResultsStore
    from harness.toxicity import make_scorer
    from tasks.base import TaskOptions, require_file

    if args.resume:
        args, argv = resumed_arguments(args, argv)
    elif not args.model or not args.tasks:
        raise UserError("harness run needs --model and --tasks (or --resume RUN_DIR)")
    if args.fewshot_as_multiturn is not None and not args.apply_chat_template:
        raise UserError("--fewshot-as-multiturn applies only with --apply-chat-template; add it, or drop the flag")
    # Everything that can be checked before loading the model is checked first.
    requested = [name.strip() for name in args.tasks.split(",") if name.strip()]
    if not requested:
        raise UserError("--tasks is empty; run `harness list tasks` to see the choices")
    task_names = task_registry.expand(requested)
    parse_spec(args.model)
    started = datetime.now(timezone.utc)
    output = args.output or Path("runs") / f"{started:%Y%m%d-%H%M%S}-{re.sub(r'[^A-Za-z0-9.-]+', '_', args.model)}"
    device = distributed.start(args.device)  # under torchrun: join the other ranks (and take this rank's GPU)
    rank, world_size = distributed.rank_and_size()
    if not args.resume and rank == 0:  # rank 0 alone writes the run
        check_output_folder(output)
    sandbox = make_sandbox(args) if args.allow_code_execution else None
    options = TaskOptions(num_fewshot=args.num_fewshot, data_dir=args.data_dir, samples=args.samples,
                          temperature=args.temperature, fewshot_seed=args.seed,
                          run_programs=runner_with_progress(sandbox) if sandbox else None,
                          toxicity_scorer=functools.cache(lambda: make_scorer(
                              args.toxicity_scorer, args.toxicity_checkpoint, args.toxicity_config, args.device)))
    if args.data_dir is not None and not args.data_dir.is_dir():
        raise UserError(f"--data-dir {args.data_dir} is not a folder")
    built_tasks = [task_registry.build(name, options) for name in task_names]
    for task in built_tasks:  # a bad few-shot count or missing data fails now, not after other tasks ran
        task.docs()
        for path in task.data_files():
            require_file(path)
    prompt_format = PromptFormat(chat_template=args.apply_chat_template, system_prompt=args.system_prompt,
                                 fewshot_as_multiturn=args.fewshot_as_multiturn != "false")
    store = None if args.no_cache else ResponseCache()

    clock = time.perf_counter()
    torch.manual_seed(args.seed)
    adapter = load_model(args.model, device=device, dtype=args.dtype,
                         progress=lambda message: print(message, file=sys.stderr))
    cache = CacheUse(store, model_key(adapter.fingerprint, adapter.implementation, str(adapter.dtype),
                                      str(adapter.device), prompt_format.describe(adapter))) if store else None
    invocation = {"argv": argv, "cwd": str(Path.cwd()), "created": started.isoformat()}
    if not args.resume and rank == 0:
        start_run(output, invocation)
    # Every run is profiled: the profiler wraps the adapter's batches (never task code) and costs well under 2 %.
    adapter.profiler = Profiler(adapter.device)
    adapter.profiler.start()
    try:
        evaluation = evaluate(adapter, built_tasks, limit=args.limit,
                              batch_size=None if args.batch_size == "auto" else args.batch_size, seed=args.seed,
                              prompt_format=prompt_format, cache=cache)
        code_execution = sandbox.describe() if sandbox else None
    except KeyboardInterrupt:
        stored = f"{sum(cache.computed.values())} new responses are in the response cache; " if cache else ""
        resume = f"resume with: harness run --resume {output}" if cache else \
            "with --no-cache nothing was kept; run the command again"
        print(f"\nharness: interrupted; {stored}{resume}", file=sys.stderr)
        return 130
    except UserError:
        if not args.resume and rank == 0:  # bad input found during the run: leave nothing behind
            shutil.rmtree(output, ignore_errors=True)
        raise
    finally:
        adapter.profiler.stop()
        if sandbox:
            sandbox.close()
        if store:
            store.close()
    if rank != 0:  # its answers went to rank 0, which scores them and writes the run
        distributed.finish()
        return 0
    distributed.finish()
    record = {
        "harness_version": __version__,
        "created": started.isoformat(),
        "command": "harness " + " ".join(argv),
        "invocation": invocation,
        "model": {"spec": args.model, "fingerprint": adapter.fingerprint, **adapter.info()},
        "settings": {
            "tasks": task_names, "limit": args.limit, "num_fewshot": args.num_fewshot,
            "batch_size": args.batch_size,
            "batch_policy": f"longest first, at most {MAX_BATCH_POSITIONS} positions a batch",
            "device": args.device, "dtype": args.dtype, "seed": args.seed,
            "data_dir": str(args.data_dir) if args.data_dir else None,
            **prompt_format.describe(adapter),
            "samples": args.samples, "temperature": args.temperature,
            "code_execution": code_execution,
            "response_cache": {"path": str(store.path), "hits": dict(cache.hits), "computed": dict(cache.computed)}
            if cache else None,
            "resumed": bool(args.resume),
            # Under torchrun the systems figures and cache counts are rank 0's share of the work.
            "data_parallel": {"world_size": world_size} if world_size > 1 else None,
        },
        "tasks": evaluation.task_records,
        "results": evaluation.results,
        "systems": adapter.profiler.summary(),
        "environment": {**environment(), "hardware": hardware_context(adapter.device, adapter.dtype)},
        "wall_seconds": round(time.perf_counter() - clock, 3),
    }
    folder = write_run(output, record, evaluation.samples)
    try:  # the run folder is the record; the store is an index of them, and failing it loses nothing
        results_store = ResultsStore(args.results_db)
        results_store.record(folder)
        results_store.close()
    except (OSError, sqlite3.Error) as error:
        print(f"warning: the run was not added to the results store: {error}", file=sys.stderr)
    report(args, record, evaluation, cache)
    print(f"results: {folder}")
    return 0


def report(args, record: dict, evaluation, cache) -> None:
    """The run's tables on screen, then what the user should know about how its numbers were made."""
    from reports.systems import print_systems
    from reports.tables import print_results

    chat = "chat template" if args.apply_chat_template else "no chat template"
    print_results(evaluation.results, title=f"{args.model}, {chat} ({record['wall_seconds']:.0f} s)")
    hardware = record["environment"]["hardware"]
    print_systems(record["systems"], f"{hardware['cpu_model']}, {args.device}, {args.dtype}"
                  if isinstance(hardware.get("cpu_model"), str) else f"{args.device}, {args.dtype}")
    if cache and sum(cache.hits.values()):  # cached responses cost nothing: the systems figures leave them out
        hits, computed = sum(cache.hits.values()), sum(cache.computed.values())
        print(f"response cache: {hits} responses reused, {computed} computed (the systems figures cover only "
              "those computed; --no-cache measures everything)", file=sys.stderr)
    scorers = {r["toxicity_scorer"]["package"] for r in evaluation.task_records.values() if r.get("toxicity_scorer")}
    for scorer in scorers:  # toxicity from different scorers is not comparable: say which one this is
        print(f"toxicity scored by {scorer}", file=sys.stderr)
    for name, task_record in evaluation.task_records.items():
        empty, total = task_record.get("empty_generations", 0), task_record.get("generations", 0)
        if empty:
            advice = ("; an instruction-tuned model may need --apply-chat-template" if not args.apply_chat_template
                      else "")
            print(f"warning: {name}: {empty} of {total} generations are empty{advice}", file=sys.stderr)
        if task_record.get("truncated_requests"):
            print(f"note: {name}: {task_record['truncated_requests']} prompts were longer than the model's window "
                  "and were cut from the left, as lm-eval does", file=sys.stderr)


def rerun_command(args, argv: list[str]) -> int:
    """Runs a finished run's recorded command again, into a new folder and without the cache, and compares every
    sample's scores with the original's."""
    from harness.record.run_folder import read_run
    from harness.cli import build_parser

    original, original_samples = read_run(args.run)
    recorded = original.get("invocation", {}).get("argv")
    if not recorded:
        raise UserError(f"{args.run} was made before runs recorded their command; it cannot be rerun")
    rerun = build_parser().parse_args(recorded)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    rerun.output = args.output or args.run.parent / f"{args.run.name}-rerun-{stamp}"
    rerun.no_cache, rerun.resume, rerun.debug = True, None, args.debug
    recorded = [a for a in recorded if a != "--no-cache"]
    code = run_command(rerun, recorded + ["--output", str(rerun.output), "--no-cache"])
    if code:
        return code
    _, samples = read_run(rerun.output)
    scores = lambda rows: [(s["task"], s["doc_id"], s["scores"]) for s in rows]  # noqa: E731
    differing = [a for a, b in zip(scores(original_samples), scores(samples)) if a != b]
    if len(samples) != len(original_samples) or differing:
        print(f"NOT reproduced: {len(differing)} of {len(samples)} samples score differently from {args.run}")
        return 1
    print(f"reproduced: all {len(samples)} samples score exactly as in {args.run}")
    return 0
