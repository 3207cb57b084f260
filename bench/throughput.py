"""Benchmark: our harness against its peers on the same model, data and machine, in one script.

    .venv/bin/python bench/throughput.py [--only mmlu,wikitext,truthfulqa,generate,flops] [--limit N]
                                         [--batch-size 8] [--output FILE.json]

  mmlu        `harness run` on mmlu_abstract_algebra, _anatomy, _astronomy, 5-shot, against lm-eval 0.4.13's hf
              model on the same subjects; the accuracies must match                                    target 4x
  wikitext    WikiText-2 document-level perplexity, batch size 1 on both sides                       target 1.3x
  truthfulqa  truthfulqa_mc2, 0-shot (its fixed 6-shot QA preamble is part of the prompt)              target 2x
  generate    our adapter's generate against transformers' generate: 8 prompts of exactly 128 tokens, 128 new
              tokens each, greedy, batch 8, generated tokens/s                                          target 2x
  flops       our loglikelihood prefill tokens/s x 2 x parameters over this machine's matmul FLOP/s, the faster
              of MKL's and oneDNN's (packed weights) fp32 kernels                                        target 60 %
A ratio is our speed over the peer's (for wall times: the peer's seconds over ours).

Wall time excludes model load on both sides. Each evaluation runs in its own subprocess: ours as `harness run`,
timed by its run record's systems.run.wall_s (the profiler spans evaluate(), after the model is loaded and the
documents read); lm-eval through this file run by lm-eval's Python as a worker that calls simple_evaluate as the
`lm_eval` CLI does, timed around lm_eval.evaluator.evaluate() (after the model is built and the datasets loaded).
Each subprocess's whole wall clock (start-up, imports, load) is printed too. Generation runs in this process,
after a warm-up call on each side. lm-eval reads the documents our own task loaders read from tasks/data, exported
as JSON lines to $HARNESS_HOME/bench/lmeval_data, through the task YAMLs in bench/lmeval_tasks (lm-eval's own
task YAMLs with only the dataset lines changed; their data paths are relative to the directory the worker runs in).
The repository holds no lm-eval code: the worker, under lm-eval's Python, assembles the folder it gives TaskManager
(lmeval_tasks/ in the run's scratch folder) from those YAMLs plus two files copied at run time from the installed
lm-eval's package: lm_eval/tasks/truthfulqa/utils.py (as utils.py, for `!function utils.process_results_mc2`) and
lm_eval/tasks/wikitext/preprocess_wikitext.py (for `!function preprocess_wikitext.*`). The machine is shared
and noisy: each ratio is one measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUBJECTS = ["abstract_algebra", "anatomy", "astronomy"]
BENCHMARKS = ["mmlu", "wikitext", "truthfulqa", "generate", "flops"]
TARGETS = {"mmlu": 4.0, "wikitext": 1.3, "truthfulqa": 2.0, "generate": 2.0, "flops": 0.60}
GEN_BATCH, PROMPT_TOKENS, NEW_TOKENS = 8, 128, 128
# key: (our task, lm-eval's task, metric, batch size None = --batch-size, agreement docs/fidelity.md requires).
# WikiText runs at batch size 1 on both sides: lm-eval at 8 holds eight 8192-token windows' logits (about 26 GB).
SINGLE_TASKS = {
    "wikitext": ("wikitext", "bench_wikitext", "word_perplexity", 1, lambda a, b: abs(a - b) <= 0.005 * b),
    "truthfulqa": ("truthfulqa_mc2", "bench_truthfulqa_mc2", "acc", None, lambda a, b: abs(a - b) <= 0.01),
}


# The Python files our YAMLs' `!function` tags name, taken from the installed lm-eval at run time (never committed
# here): (path under lm_eval/tasks, name in the include folder).
LMEVAL_TASK_CODE = [("truthfulqa/utils.py", "utils.py"), ("wikitext/preprocess_wikitext.py", "preprocess_wikitext.py"),
                    ("crows_pairs/utils.py", "crows_pairs_utils.py")]


def assemble_include_folder(yamls: Path, include: Path) -> None:
    """Fills `include` with our task YAMLs and the lm-eval task code they reference; runs under lm-eval's Python."""
    import lm_eval

    lmeval_tasks = Path(lm_eval.__file__).resolve().parent / "tasks"
    if include.exists():
        shutil.rmtree(include)
    include.mkdir(parents=True)
    for path in sorted(yamls.iterdir()):
        if path.is_file() and path.suffix != ".py":
            shutil.copy2(path, include / path.name)
    for source, name in LMEVAL_TASK_CODE:
        shutil.copy2(lmeval_tasks / source, include / name)


def lmeval_worker(config_path: str) -> None:
    """lm-eval's side, run by lm-eval's own Python (so it imports nothing of ours)."""
    config = json.loads(Path(config_path).read_text())
    assemble_include_folder(Path(config["task_yamls"]), Path(config["include_path"]))
    os.chdir(config["data_dir"])  # the YAMLs name their data files relative to here
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # as the lm_eval CLI sets it
    import lm_eval.evaluator as evaluator
    from lm_eval.api.registry import get_model
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import simple_parse_args_string

    started = time.perf_counter()
    lm = get_model("hf").create_from_arg_string(  # what simple_evaluate does with --model hf --model_args ...
        config["model_args"], {"batch_size": config["batch_size"], "max_batch_size": None, "device": "cpu"})
    load_s = time.perf_counter() - started
    # simple_evaluate loads the datasets, then calls the module's evaluate(): timing that call leaves model and
    # data loading out, as systems.run.wall_s does on our side.
    inner, timed = evaluator.evaluate, {}

    def timed_evaluate(*args, **kwargs):
        began = time.perf_counter()
        result = inner(*args, **kwargs)
        timed["evaluate_s"] = time.perf_counter() - began
        return result

    evaluator.evaluate = timed_evaluate
    manager = TaskManager(include_path=config["include_path"], metadata=simple_parse_args_string(config["model_args"]))
    # The CLI's defaults: seeds 0, 1234, 1234, 1234; no samples logged; bootstrap_iters left at 100,000.
    results = evaluator.simple_evaluate(
        model=lm, tasks=config["tasks"], num_fewshot=config["num_fewshot"], batch_size=config["batch_size"],
        device="cpu", limit=config["limit"], log_samples=False, task_manager=manager, random_seed=0,
        numpy_random_seed=1234, torch_random_seed=1234, fewshot_random_seed=1234)
    metrics = {task: {key.split(",")[0]: value for key, value in values.items()
                      if "," in key and "_stderr" not in key and isinstance(value, (int, float))}
               for task, values in results["results"].items()}
    counts = {task: n["effective"] for task, n in results["n-samples"].items()}
    Path(config["output"]).write_text(json.dumps(
        {"load_s": load_s, "evaluate_s": timed["evaluate_s"], "results": metrics, "n": counts}))


def write_if_changed(path: Path, rows: list[dict]) -> None:
    # An unchanged file keeps its modification time, so the datasets cache lm-eval built from it stays valid.
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def export_lmeval_data(directory: Path) -> None:
    """Our tasks' documents, from our own loaders, in the layouts lm-eval's task YAMLs expect."""
    import tasks
    from tasks.base import DATA_DIR
    from tasks.mmlu import read_split

    directory.mkdir(parents=True, exist_ok=True)
    for subject in SUBJECTS:
        for split in ("test", "dev"):
            rows = read_split(DATA_DIR / "mmlu" / split / f"{subject}_{split}.csv")
            write_if_changed(directory / f"mmlu_{subject}_{split}.jsonl", rows)
    write_if_changed(directory / "wikitext_test.jsonl", [d.fields for d in tasks.build("wikitext").docs()])
    truthfulqa = tasks.build("truthfulqa_mc2").docs()  # as rows of Hugging Face truthful_qa's multiple_choice
    write_if_changed(directory / "truthfulqa_mc.jsonl", [{"question": d.fields["question"], "mc2_targets": {
        "choices": d.fields["choices"], "labels": d.fields["labels"]}} for d in truthfulqa])
    gsm8k = tasks.build("gsm8k")  # the rows of openai/gsm8k's main config, as our loader reads them
    write_if_changed(directory / "gsm8k_test.jsonl", [d.fields for d in gsm8k.docs()])
    write_if_changed(directory / "gsm8k_train.jsonl", gsm8k.train)
    shipped = DATA_DIR / "crows_pairs" / "crows_pairs_anonymized.csv"  # lm-eval reads the CSV itself
    if not (directory / shipped.name).is_file() or (directory / shipped.name).read_bytes() != shipped.read_bytes():
        shutil.copy2(shipped, directory / shipped.name)


def run_logged(command: list[str], log: Path) -> float:
    """Runs a command from the repository root with its output in `log`; returns its wall clock in seconds."""
    started = time.perf_counter()
    with open(log, "w") as handle:
        code = subprocess.run(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        sys.exit(f"{' '.join(command[:4])} ... failed (exit {code}); the end of {log}:\n{tail}")
    return time.perf_counter() - started


def run_ours(args, work: Path, name: str, task_names: list[str], num_fewshot: int | None) -> dict:
    run_dir = work / f"ours_{name}"
    # Ours runs with its default batch policy, auto (a token budget; results do not depend on it); lm-eval with
    # the fixed batch size given.
    command = [sys.executable, "-m", "harness", "run", "--model", f"hf:{args.model_folder}", "--tasks",
               ",".join(task_names), "--batch-size", "auto", "--output", str(run_dir),
               "--results-db", str(work / "results.sqlite"),  # a scratch store: the user's is left alone
               "--no-cache"]  # every response computed: a cached one would take no time
    command += ["--num-fewshot", str(num_fewshot)] if num_fewshot is not None else []
    command += ["--limit", str(args.limit)] if args.limit else []
    print(f"  ours:    {' '.join(command[1:])}", flush=True)
    process_s = run_logged(command, work / f"ours_{name}.log")
    record = json.loads((run_dir / "results.json").read_text())
    return {"process_s": process_s, "evaluate_s": record["systems"]["run"]["wall_s"], "results": record["results"],
            "prefill_tokens_per_s": record["systems"]["run"]["prefill"]["tokens_per_s"]}


def run_lmeval(args, work: Path, name: str, task_names: list[str], num_fewshot: int | None, batch_size: int) -> dict:
    config = {"model_args": f"pretrained={args.model_folder},dtype=float32", "tasks": task_names,
              "num_fewshot": num_fewshot, "limit": args.limit, "batch_size": batch_size,
              "task_yamls": str(REPO / "bench" / "lmeval_tasks"), "include_path": str(work / "lmeval_tasks"),
              "data_dir": str(args.data_dir),
              "output": str(work / f"lmeval_{name}.json")}
    (work / f"lmeval_{name}.config.json").write_text(json.dumps(config, indent=1))
    print(f"  lm-eval: {args.lmeval_python} {Path(__file__).name} --lmeval-worker (--model hf --model_args "
          f"{config['model_args']} --tasks {','.join(task_names)}"
          + (f" --num_fewshot {num_fewshot}" if num_fewshot is not None else "")
          + (f" --limit {args.limit}" if args.limit else "") + f" --batch_size {batch_size} --device cpu)", flush=True)
    process_s = run_logged([args.lmeval_python, str(Path(__file__).resolve()), "--lmeval-worker",
                            str(work / f"lmeval_{name}.config.json")], work / f"lmeval_{name}.log")
    return {"process_s": process_s, **json.loads(Path(config["output"]).read_text())}


def timing_row(benchmark: str, ours: dict, peer: dict) -> dict:
    print(f"  wall time excluding model load: ours {ours['evaluate_s']:.1f} s, lm-eval {peer['evaluate_s']:.1f} s; "
          f"whole subprocess (start-up and load included): ours {ours['process_s']:.1f} s, "
          f"lm-eval {peer['process_s']:.1f} s", flush=True)
    return {"benchmark": benchmark, "unit": "s", "ours": ours["evaluate_s"], "peer": peer["evaluate_s"],
            "ratio": peer["evaluate_s"] / ours["evaluate_s"]}


def bench_mmlu(args, work: Path, figures: dict) -> dict:
    ours = run_ours(args, work, "mmlu", [f"mmlu_{s}" for s in SUBJECTS], 5)
    peer = run_lmeval(args, work, "mmlu", [f"bench_mmlu_{s}" for s in SUBJECTS], 5, args.batch_size)
    scores = [(ours["results"][f"mmlu_{s}"]["n"], ours["results"][f"mmlu_{s}"]["acc"], peer["n"][f"bench_mmlu_{s}"],
               peer["results"][f"bench_mmlu_{s}"]["acc"]) for s in SUBJECTS]  # (n, acc) ours, then lm-eval's
    for subject, (n, mine, peer_n, theirs) in zip(SUBJECTS, scores):
        print(f"  {subject:17} n={n:3} (lm-eval {peer_n:3})  acc ours {mine:.4f}  lm-eval {theirs:.4f}")
    match = all(n == peer_n and abs(mine - theirs) < 1e-9 for n, mine, peer_n, theirs in scores)
    total = sum(score[0] for score in scores)
    print(f"  acc over all {total} questions: ours {sum(n * a for n, a, _, _ in scores) / total:.4f}, lm-eval "
          f"{sum(n * a for _, _, n, a in scores) / total:.4f}; accuracies {'match' if match else 'DO NOT MATCH'}")
    figures["mmlu"] = {"ours": ours, "lm-eval": peer, "quality_match": match}
    return {**timing_row("mmlu 5-shot (3 subjects)", ours, peer), "quality_match": match}


def bench_single(args, work: Path, figures: dict, key: str) -> dict:
    ours_task, peer_task, metric, batch_size, close = SINGLE_TASKS[key]
    ours = run_ours(args, work, key, [ours_task], None)
    peer = run_lmeval(args, work, key, [peer_task], None, batch_size or args.batch_size)
    mine, theirs = ours["results"][ours_task][metric], peer["results"][peer_task][metric]
    match = close(mine, theirs)
    print(f"  {metric} ours {mine:.6f}, lm-eval {theirs:.6f} (difference {mine - theirs:+.2e}; "
          f"{'within' if match else 'OUTSIDE'} docs/fidelity.md's requirement)")
    figures[key] = {"ours": ours, "lm-eval": peer, "quality_match": match}
    return {**timing_row(f"{ours_task} ({metric})", ours, peer), "quality_match": match}


def bench_generate(args, adapter, figures: dict) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from harness.models.registry import load_model
    from harness.commands.profile_sweep import text_windows
    from harness.engine.requests import GenerateRequest

    # Ours takes text, transformers token ids: keep WikiText windows whose text re-encodes to exactly the same 128
    # tokens, so that both read identical prompts (and none needs padding).
    prompts = []
    for window in text_windows(adapter, 8 * GEN_BATCH, PROMPT_TOKENS):
        text = adapter.tokenizer.decode(window)
        if adapter.encode(text) == window and len(prompts) < GEN_BATCH:
            prompts.append((text, window))
    # No stop strings, so only EOS can end one of ours early (ours always stops at EOS; transformers is given
    # min_new_tokens, so it never does): tokens/s counts the tokens each side actually generated.
    requests = [GenerateRequest(text, stop=(), max_tokens=NEW_TOKENS) for text, _ in prompts]

    def time_ours(adapter):
        adapter.generate([GenerateRequest(text, max_tokens=2) for text, _ in prompts], batch_size=GEN_BATCH)  # warm-up
        started = time.perf_counter()
        generations = adapter.generate(requests, batch_size=GEN_BATCH)
        return generations, time.perf_counter() - started

    generations, ours_s = time_ours(adapter)
    ours_tokens = sum(len(g.tokens) for g in generations)
    # The same engine with plain nn.Linear layers (MKL): separates the packed weights' share from the engine's.
    os.environ["HARNESS_PACKED_LINEAR"] = "0"
    try:
        unpacked, unpacked_s = time_ours(load_model(f"hf:{args.model_folder}", progress=lambda message: None))
    finally:
        del os.environ["HARNESS_PACKED_LINEAR"]
    unpacked_rate = sum(len(g.tokens) for g in unpacked) / unpacked_s

    model = AutoModelForCausalLM.from_pretrained(args.model_folder, dtype=torch.float32).eval()
    ids = torch.tensor([window for _, window in prompts])
    options = {"attention_mask": torch.ones_like(ids), "do_sample": False,
               "pad_token_id": adapter.tokenizer.eos_token_id}
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=2, min_new_tokens=2, **options)  # warm-up
        started = time.perf_counter()
        new = model.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, **options)[:, ids.shape[1]:]
        peer_s = time.perf_counter() - started
    same = sum(g.tokens == new[row, :len(g.tokens)].tolist() for row, g in enumerate(generations))
    early = [g.finish for g in generations if g.finish != "length"]
    ours_rate, peer_rate = ours_tokens / ours_s, new.numel() / peer_s
    print(f"  {len(prompts)} prompts x {PROMPT_TOKENS} tokens, greedy, batch {GEN_BATCH}, models loaded beforehand: "
          f"ours {ours_tokens} tokens in {ours_s:.2f} s = {ours_rate:.1f} tok/s; transformers {new.numel()} tokens "
          f"in {peer_s:.2f} s = {peer_rate:.1f} tok/s")
    print(f"  ours stopped early (EOS) on {len(early)} of {len(prompts)} prompts; greedy tokens identical to "
          f"transformers' on {same} of {len(prompts)}")
    print(f"  ours with plain nn.Linear layers (HARNESS_PACKED_LINEAR=0): {unpacked_rate:.1f} tok/s, "
          f"{unpacked_rate / peer_rate:.2f}x transformers; tokens identical to the packed run's on "
          f"{sum(a.tokens == b.tokens for a, b in zip(generations, unpacked))} of {len(prompts)}")
    figures["generate"] = {"ours_tokens": ours_tokens, "ours_s": ours_s, "peer_tokens": new.numel(), "peer_s": peer_s,
                           "identical_rows": same, "ours_early_stops": len(early),
                           "ours_unpacked_tokens_per_s": unpacked_rate}
    return {"benchmark": "generate (8 x 128 -> 128)", "unit": "tok/s", "ours": ours_rate, "peer": peer_rate,
            "ratio": ours_rate / peer_rate}


def bench_flops(args, work: Path, adapter, figures: dict, prefill: tuple[str, float] | None) -> dict:
    from harness.commands.profile_sweep import matmul_rates

    if prefill is None:  # no loglikelihood benchmark ran: run ours alone on MMLU for the figure
        prefill = ("mmlu", run_ours(args, work, "mmlu_flops", [f"mmlu_{s}" for s in SUBJECTS], 5)
                   ["prefill_tokens_per_s"])
    source, tokens_per_s = prefill
    # This process's threads, as many as the subprocesses had (OMP_NUM_THREADS). The limit is the faster kernel's:
    # oneDNN with packed weights, which on this AMD machine runs 2.4x faster than MKL.
    rates = matmul_rates()
    flops = max(rates.values())
    parameters = adapter.info()["parameters"]
    limit = flops / (2 * parameters)  # 2 x parameters FLOPs a token: every weight multiplies once; attention left out
    kernels = ", ".join(f"{name} {rate / 1e9:.1f}" for name, rate in rates.items())
    print(f"  matmul GFLOP/s: {kernels}; {parameters / 1e6:.1f} M parameters -> limit {limit:.0f} tok/s; "
          f"our prefill ({source} run) {tokens_per_s:.0f} tok/s = {tokens_per_s / limit:.1%} of the limit")
    figures["flops"] = {"matmul_flops_per_s": flops, "matmul_rates": rates, "parameters": parameters,
                        "prefill_source": source, "prefill_tokens_per_s": tokens_per_s, "limit_tokens_per_s": limit}
    return {"benchmark": "prefill vs FLOP limit", "unit": "tok/s", "ours": tokens_per_s, "peer": limit,
            "ratio": tokens_per_s / limit}


def print_table(rows: list[dict]) -> None:
    print("\nratio = our speed / the peer's; wall times exclude model load on both sides")
    print(f"{'benchmark':32} {'ours':>14} {'peer':>20} {'ratio':>7} {'target':>6}  met")
    for row in rows:
        flops = row["key"] == "flops"  # its peer is the machine's limit, its ratio a share of it
        ratio = f"{row['ratio']:.0%}" if flops else f"{row['ratio']:.2f}x"
        target = f"{row['target']:.0%}" if flops else f"{row['target']:g}x"
        peer = f"{row['peer']:.1f} {row['unit']}" + (" limit" if flops else "")
        quality = "" if row.get("quality_match", True) else "  (scores differ!)"
        print(f"{row['benchmark']:32} {row['ours']:>8.1f} {row['unit']:<5} {peer:>20} {ratio:>7} {target:>6}  "
              f"{'yes' if row['met'] else 'no'}{quality}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--lmeval-worker":
        return lmeval_worker(sys.argv[2])
    sys.path.insert(0, str(REPO))
    from harness.settings import harness_home

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated, from " + ",".join(BENCHMARKS))
    parser.add_argument("--limit", type=int, help="documents per task on both sides (a quick smoke run)")
    parser.add_argument("--batch-size", type=int, default=8, help="lm-eval's, for mmlu and truthfulqa (default 8)")
    parser.add_argument("--output", type=Path, help="write every figure to this JSON file")
    parser.add_argument("--model-folder", type=Path, default=harness_home() / "models" / "smollm2-135m-instruct")
    parser.add_argument("--lmeval-python", default="/work/lmeval-venv/bin/python", help="lm-eval 0.4.13's Python")
    args = parser.parse_args()
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    if set(only) - set(BENCHMARKS) or (args.limit is not None and args.limit < 1):
        parser.error(f"--only takes {','.join(BENCHMARKS)}; --limit must be at least 1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # inherited by both sides' subprocesses
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    args.data_dir = harness_home() / "bench" / "lmeval_data"
    export_lmeval_data(args.data_dir)
    work = Path(tempfile.mkdtemp(prefix="throughput-"))
    print(f"model {args.model_folder}; logs, run folders and lm-eval results in {work}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)

    rows, figures, adapter, prefill = [], {}, None, None
    for name in ["mmlu", *SINGLE_TASKS]:  # one at a time: the two sides never share the machine
        if name in only:
            print(f"\n== {name}", flush=True)
            row = bench_mmlu(args, work, figures) if name == "mmlu" else bench_single(args, work, figures, name)
            rows.append({"key": name, **row})
            prefill = prefill or (name, figures[name]["ours"]["prefill_tokens_per_s"])
    if "generate" in only or "flops" in only:
        from harness.models.registry import load_model

        adapter = load_model(f"hf:{args.model_folder}", progress=lambda message: None)
    if "generate" in only:
        print("\n== generate", flush=True)
        rows.append({"key": "generate", **bench_generate(args, adapter, figures)})
    if "flops" in only:
        print("\n== flops", flush=True)
        rows.append({"key": "flops", **bench_flops(args, work, adapter, figures, prefill)})
    for row in rows:
        row["target"] = TARGETS[row["key"]]
        row["met"] = row["ratio"] >= row["target"]
    print_table(rows)
    if args.output:
        settings = {"limit": args.limit, "batch_size": args.batch_size, "model_folder": args.model_folder,
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "work_dir": work,
                    "timing": "seconds exclude model load on both sides (process_s includes it)"}
        args.output.write_text(json.dumps({"settings": settings, "rows": rows, "figures": figures}, default=str))
        print(f"figures: {args.output}")


if __name__ == "__main__":
    main()
