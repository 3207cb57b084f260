"""The `harness` command: parses the command line (harness/cli/parser.py), turns it into typed inputs (a RunConfig for
`harness run`), and hands them to harness/commands. It does nothing else.

Bad input ends with one line on stderr and exit code 2; --debug shows the traceback instead.

Each command's module is imported when that command runs: most of them load torch, which takes seconds, and
`harness list tasks` or `--help` should not wait for it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from harness.cli.parser import build_parser
from harness.config import (
    EngineConfig,
    JudgeConfig,
    ModelConfig,
    OutputConfig,
    PromptConfig,
    RunConfig,
    SandboxConfig,
    TaskConfig,
    ToxicityConfig,
)
from harness.errors import UserError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args, argv)
    except UserError as error:
        if args.debug:
            raise
        print(f"harness: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head`: the reader has what it wanted
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("harness: interrupted; no run folder was written", file=sys.stderr)
        return 130


def absolute(path: Path | None) -> Path | None:
    """Recorded paths are absolute, so that a run resumes or reruns from any working directory."""
    return path.expanduser().absolute() if path is not None else None


def sandbox_config(args: argparse.Namespace) -> SandboxConfig:
    return SandboxConfig(allow_code_execution=args.allow_code_execution, timeout_s=args.code_timeout,
                         workers=args.code_workers, allow_weak_isolation=args.allow_weak_isolation)


def run_config(args: argparse.Namespace) -> RunConfig:
    """The RunConfig of `harness run`'s flags, refusing what does not go together."""
    if not args.model or not args.tasks:
        raise UserError("harness run needs --model and --tasks (or --resume RUN_DIR)")
    if args.fewshot_as_multiturn is not None and not args.apply_chat_template:
        raise UserError("--fewshot-as-multiturn applies only with --apply-chat-template; add it, or drop the flag")
    names = tuple(name.strip() for name in args.tasks.split(",") if name.strip())
    if not names:
        raise UserError("--tasks is empty; run `harness list tasks` to see the choices")
    return RunConfig(
        model=ModelConfig(spec=args.model, device=args.device, dtype=args.dtype, max_length=args.max_length,
                          revision=args.revision),
        tasks=TaskConfig(names=names, limit=args.limit[0], limits=args.limit[1], num_fewshot=args.num_fewshot,
                         data_dir=absolute(args.data_dir),
                         samples=args.samples, temperature=args.temperature, perturb=args.perturb),
        prompts=PromptConfig(chat_template=args.apply_chat_template, system_prompt=args.system_prompt,
                             fewshot_as_multiturn=args.fewshot_as_multiturn != "false"),
        engine=EngineConfig(batch_size=None if args.batch_size == "auto" else args.batch_size, seed=args.seed,
                            use_cache=not args.no_cache, speculative=args.speculative,
                            kv_cache=not args.no_kv_cache, max_new_tokens=args.max_new_tokens),
        sandbox=sandbox_config(args),
        judge=JudgeConfig(spec=args.judge, max_failures=args.judge_max_failures, scoring=args.judge_scoring),
        toxicity=ToxicityConfig(scorer=args.toxicity_scorer, checkpoint=absolute(args.toxicity_checkpoint),
                                hf_config=absolute(args.toxicity_config)),
        output=OutputConfig(folder=args.output, results_db=absolute(args.results_db)),
    )


def run_command(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.commands.run import resume, run  # loads torch

    if args.resume:
        given = [a for a in argv if a not in ("run", "--resume", str(args.resume), "--debug")]
        if given:
            raise UserError(f"--resume takes every setting from {args.resume}/run.json; give it alone, not with "
                            f"{given[0]}")
        return resume(args.resume)
    return run(run_config(args), command="harness " + " ".join(argv))


def rerun_command(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.commands.run import rerun  # loads torch

    return rerun(args.run, args.output)


def serve_command(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.commands.serve import serve_model  # loads torch

    return serve_model(args.model, device=args.device, dtype=args.dtype, max_length=args.max_length,
                       revision=args.revision, host=args.host, port=args.port, max_batch=args.max_batch,
                       max_queued=args.max_queued, max_body_bytes=args.max_body_bytes, api_key=args.api_key,
                       speculative=args.speculative, kv_cache=not args.no_kv_cache)


def load_command(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.commands.load import load_command as load  # loads pandas and the model registry (torch)

    output = args.output or Path("runs") / f"load-{time.strftime('%Y%m%d-%H%M%S')}"
    return load(args.url, model=args.model, api_key=args.api_key, rates=args.rate, concurrencies=args.concurrency,
                max_rate_range=args.find_max_rate, requests=args.requests, duration_s=args.duration,
                arrival=args.arrival, burstiness=args.burstiness, prompts=args.prompts, tokenizer=args.tokenizer,
                input_tokens=args.input_tokens, output_tokens=args.output_tokens, length_spread=args.length_spread,
                slo_text=args.slo, slo_attainment=args.slo_attainment, search_steps=args.search_steps,
                seed=args.seed, timeout_s=args.timeout, output=output,
                results_db=absolute(args.results_db))


def score_code_command(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.commands.score_code import score_code_command as score_code  # loads the sandbox and the tasks

    return score_code(args.samples, output=args.output, sandbox_config=sandbox_config(args))


def judge_command(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.commands.judge import judge_runs  # loads torch

    return judge_runs(args.run_a, args.run_b, args.judge, device=args.device, dtype=args.dtype,
                      verbosity_check=args.verbosity_check, max_failures=args.judge_max_failures,
                      max_new_tokens=args.max_new_tokens, use_cache=not args.no_cache, output=args.output,
                      scoring=args.judge_scoring)


def profile_command(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.commands.profile import profile  # loads torch

    return profile(args.model, device=args.device, dtype=args.dtype, max_length=args.max_length, revision=args.revision,
                   batch_sizes=args.batch_sizes,
                   prompt_lengths=args.prompt_lengths, new_tokens=args.new_tokens, repeats=args.repeats,
                   output=args.output, kv_cache=args.kv_cache, speculative=args.speculative)


def gate_command(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.commands.gate import gate  # loads scipy

    return gate(args.run, baseline=args.baseline, alpha=args.alpha, correction=args.correction,
                max_drop=args.max_drop, min_effect=dict(args.min_effect),
                allow_incomparable=args.allow_incomparable, quality_only=args.quality_only,
                update_baseline=args.update_baseline)


def compare_command(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.commands.compare import compare_runs  # loads scipy

    return compare_runs(args.reference, args.candidate, alpha=args.alpha, correction=args.correction,
                        output=args.output)


def plan_command(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.commands.plan import plan_command as plan  # loads scipy

    return plan(args.baseline, min_effect=dict(args.min_effect), reference=args.reference, alpha=args.alpha,
                churn=args.churn, cv=args.cv, budget_minutes=args.budget_minutes)


def report_command(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.commands.report import report  # loads pandas, matplotlib and jinja2

    return report(args.runs, formats=args.format, output=args.output, max_failures=args.max_failures)


def leaderboard_command(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.commands.report import leaderboard  # loads pandas, matplotlib and jinja2

    return leaderboard(args.suite, results_db=args.results_db, output=args.output)


def list_command(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.commands.listing import list_model_specs, list_tasks  # loads torch (the model registry)

    return list_tasks() if args.what == "tasks" else list_model_specs()


COMMANDS = {"run": run_command, "rerun": rerun_command, "serve": serve_command, "load": load_command,
            "score-code": score_code_command,
            "profile": profile_command, "gate": gate_command, "compare": compare_command, "judge": judge_command,
            "plan": plan_command, "report": report_command,
            "leaderboard": leaderboard_command, "list": list_command}


if __name__ == "__main__":
    sys.exit(main())
