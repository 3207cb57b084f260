"""Fidelity: harness against lm-eval 0.4.13 on the same converted model folder and data, document by document.

    .venv/bin/python bench/fidelity.py --model gemma3-270m [--only mmlu0,mmlu5,gsm8k,wikitext,truthfulqa]
                                       [--work DIR] [--wikitext-max-length 4096] [--truthfulqa-limit 100]

  mmlu0, mmlu5  mmlu_abstract_algebra, _anatomy, _astronomy, 0- and 5-shot: accuracy, the same prediction on every
                question, the largest difference of one answer's loglikelihood
  gsm8k         the first 50 test questions, 5-shot, greedy: exact match (both filters) and the generations, text for
                text
  wikitext      the 62 documents, rolling loglikelihood at a window of --wikitext-max-length on both sides (lm-eval's
                `max_length` model argument, our --max-length): the three perplexities and each document's sum
  truthfulqa    truthfulqa_mc2 on the first --truthfulqa-limit questions: the mean and each question's score
  crows_pairs   crows_pairs_english and its nine per-type subtasks, all 1,508 pairs: both metrics, the same verdict
                on every pair, the largest difference of one sentence's loglikelihood

Each side runs in its own process, one at a time, and writes its per-document records into --work (default
$HARNESS_HOME/bench/fidelity-MODEL); a side whose records are already there is not run again, so an interrupted
comparison resumes and a finished one can be re-read. lm-eval runs as its CLI (`lm_eval --model hf --model_args
pretrained=FOLDER,dtype=float32 --include_path ... --log_samples`) under --lmeval-python's environment, on our shipped
data exported by bench/throughput.py and the task YAMLs of bench/lmeval_tasks (lm-eval's own, with only the dataset
lines changed). Ours runs as `harness run --model MODEL --no-cache`. Both print the exact command.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUBJECTS = ["abstract_algebra", "anatomy", "astronomy"]
# name: (our tasks, lm-eval's tasks, flags for both sides' commands: ours, lm-eval's)
BENCHMARKS = {
    "mmlu0": ([f"mmlu_{s}" for s in SUBJECTS], "--num-fewshot 0", "--num_fewshot 0 --batch_size 8"),
    "mmlu5": ([f"mmlu_{s}" for s in SUBJECTS], "--num-fewshot 5", "--num_fewshot 5 --batch_size 8"),
    "gsm8k": (["gsm8k"], "--limit 50", "--limit 50 --batch_size 1"),
    "wikitext": (["wikitext"], "--batch-size 1", "--batch_size 1"),
    "truthfulqa": (["truthfulqa_mc2"], "", "--batch_size 8"),
    # Ours: the group crows_pairs_english (its nine subtasks); lm-eval: its whole task and each subtask.
    "crows_pairs": (["crows_pairs_english"] + [f"crows_pairs_english_{t}" for t in (
        "age", "disability", "gender", "nationality", "physical_appearance", "race_color", "religion",
        "sexual_orientation", "socioeconomic")], "", "--batch_size 8"),
}


def lmeval_name(task: str) -> str:
    return f"bench_{task}"


def latest(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(f"*/{pattern}"))
    if not found:
        sys.exit(f"no {pattern} under {folder}")
    return found[-1]


def run(command: list[str], log: Path, cwd: Path = REPO) -> None:
    print("  $ " + " ".join(command), flush=True)
    with open(log, "w") as handle:
        code = subprocess.run(command, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        sys.exit(f"failed (exit {code}); the end of {log}:\n{tail}")


def run_sides(args, name: str) -> None:
    tasks, ours_flags, lmeval_flags = BENCHMARKS[name]
    ours_flags, lmeval_flags = ours_flags.split(), lmeval_flags.split()
    model_args = f"pretrained={args.folder},dtype=float32"
    if name == "wikitext":
        ours_flags += ["--max-length", str(args.wikitext_max_length)]
        model_args += f",max_length={args.wikitext_max_length}"
    if name == "truthfulqa":
        ours_flags += ["--limit", str(args.truthfulqa_limit)]
        lmeval_flags += ["--limit", str(args.truthfulqa_limit)]
    ours, peer = args.work / f"ours_{name}", args.work / f"lmeval_{name}"
    if args.sides in ("ours", "both") and not (ours / "results.json").is_file():
        run([sys.executable, "-m", "harness", "run", "--model", args.model, "--tasks", ",".join(tasks), "--no-cache",
             "--results-db", str(args.work / "results.sqlite"), "--output", str(ours), *ours_flags],
            args.work / f"ours_{name}.log")
    if args.sides in ("lmeval", "both") and not list(peer.glob("*/results_*.json")):
        run([str(Path(args.lmeval_python).parent / "lm_eval"), "--model", "hf", "--model_args", model_args,
             "--tasks", ",".join(map(lmeval_name, tasks)), "--include_path", str(args.work / "lmeval_tasks"),
             "--device", "cpu", "--log_samples", "--output_path", str(peer), *lmeval_flags],
            args.work / f"lmeval_{name}.log", cwd=args.data_dir)  # the YAMLs' data paths are relative to it


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_sides(args, name: str) -> tuple[dict, dict, dict, dict]:
    """(our metrics by task, our samples by (task, doc id), lm-eval's metrics, lm-eval's samples), keyed alike."""
    ours_dir, peer_dir = args.work / f"ours_{name}", args.work / f"lmeval_{name}"
    ours_metrics = json.loads((ours_dir / "results.json").read_text())["results"]
    ours = {(s["task"], int(s["doc_id"])): s for s in read_jsonl(ours_dir / "samples.jsonl")}
    peer_metrics, peer = {}, {}
    for task, values in json.loads(latest(peer_dir, "results_*.json").read_text())["results"].items():
        peer_metrics[task.removeprefix("bench_")] = values
        for sample in read_jsonl(latest(peer_dir, f"samples_{task}_[0-9]*.jsonl")):
            if sample.get("filter") in ("none", "strict-match"):  # one record per document (the others repeat it)
                peer[(task.removeprefix("bench_"), sample["doc_id"])] = sample
    if name == "crows_pairs":
        ours = crows_pairs_keys(ours)
    if set(ours) != set(peer):
        sys.exit(f"{name}: the two sides scored different documents ({len(ours)} against {len(peer)})")
    return ours_metrics, ours, peer_metrics, peer


def crows_pairs_keys(ours: dict) -> dict:
    """Our CrowS-Pairs samples keyed as lm-eval's: a subtask's documents by their position in it (lm-eval numbers
    the rows its filter keeps; ours keep their row in the file), and every pair under the whole task by its row."""
    keyed = {("crows_pairs_english", row): sample for (_, row), sample in ours.items()}
    for task in sorted({task for task, _ in ours}):
        rows = sorted(row for t, row in ours if t == task)
        keyed.update({(task, position): ours[(task, row)] for position, row in enumerate(rows)})
    return keyed


def loglikelihoods(peer_sample: dict) -> list[float]:
    return [float(response[0]) for response in peer_sample["filtered_resps"]]


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)  # the first of equal values, as lm-eval's np.argmax


def compare(args, name: str) -> list[dict]:
    ours_metrics, ours, peer_metrics, peer = read_sides(args, name)
    rows = []
    for task in BENCHMARKS[name][0]:
        keys = sorted(key for key in ours if key[0] == task)
        row = {"benchmark": name, "task": task, "n": len(keys)}
        if task != "wikitext":  # lm-eval logs each request's context; a rolling text has none
            row["same_prompt"] = sum(ours[key]["prompt"] == peer[key]["arguments"]["gen_args_0"]["arg_0"]
                                     for key in keys)
        if task.startswith("mmlu") or task == "truthfulqa_mc2":
            row.update(ours=ours_metrics[task]["acc"], lmeval=peer_metrics[task]["acc,none"])
            differences = [abs(a["logprob"] - b) for key in keys
                           for a, b in zip(ours[key]["response"], loglikelihoods(peer[key]))]
            row["pairs"], row["max_loglikelihood_difference"] = len(differences), max(differences)
            if task.startswith("mmlu"):
                row["same_prediction"] = sum(
                    argmax([a["logprob"] for a in ours[key]["response"]]) == argmax(loglikelihoods(peer[key]))
                    for key in keys)
            else:
                row["max_score_difference"] = max(abs(ours[key]["scores"]["acc"] - peer[key]["acc"]) for key in keys)
        elif task.startswith("crows_pairs"):
            for metric in ("pct_stereotype", "likelihood_diff"):
                row[f"ours {metric}"], row[f"lmeval {metric}"] = ours_metrics[task][metric], \
                    peer_metrics[task][f"{metric},none"]
            differences = [abs(a["logprob"] - b) for key in keys
                           for a, b in zip(ours[key]["response"], loglikelihoods(peer[key]))]
            row["sentences"], row["max_loglikelihood_difference"] = len(differences), max(differences)
            row["same_verdict"] = sum(ours[key]["scores"]["pct_stereotype"] == peer[key]["pct_stereotype"]
                                      for key in keys)
        elif task == "gsm8k":
            for metric in ("exact_match,strict-match", "exact_match,flexible-extract"):
                row[f"ours {metric}"], row[f"lmeval {metric}"] = ours_metrics[task][metric], peer_metrics[task][metric]
            row["same_generation"] = sum(ours[key]["response"][0] == peer[key]["resps"][0][0] for key in keys)
        else:  # wikitext
            for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
                row[f"ours {metric}"], row[f"lmeval {metric}"] = ours_metrics[task][metric], \
                    peer_metrics[task][f"{metric},none"]
            sums = [(ours[key]["response"][0], float(peer[key]["word_perplexity"][0])) for key in keys]
            row["ours_sum"], row["lmeval_sum"] = sum(a for a, _ in sums), sum(b for _, b in sums)
            row["max_document_difference"] = max(abs(a - b) for a, b in sums)
            row["same_words"] = sum(ours[key]["scores"]["word_perplexity"][1] == peer[key]["word_perplexity"][1]
                                    for key in keys)
        rows.append(row)
        print("  " + json.dumps(row), flush=True)
    return rows


def main() -> None:
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "bench"))
    from throughput import export_lmeval_data

    from harness.models.registry import NAMED_FOLDERS
    from harness.settings import harness_home

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gemma3-270m", choices=sorted(NAMED_FOLDERS))
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"any of {','.join(BENCHMARKS)}")
    parser.add_argument("--work", type=Path, help="where both sides' records go (default $HARNESS_HOME/bench/...)")
    parser.add_argument("--wikitext-max-length", type=int, default=4096,
                        help="both sides' window for WikiText (lm-eval holds a whole window's logits: at Gemma's "
                             "262,144-token vocabulary, 4,096 positions are 4.3 GB, twice over)")
    parser.add_argument("--truthfulqa-limit", type=int, default=100)
    parser.add_argument("--lmeval-python", default="/work/lmeval-venv/bin/python", help="lm-eval 0.4.13's Python")
    parser.add_argument("--output", type=Path, help="write the comparison to this JSON file")
    parser.add_argument("--sides", default="both", choices=["both", "ours", "lmeval", "none"],
                        help="which sides to run where their records are missing (none: compare what is there)")
    args = parser.parse_args()
    only = [name for name in args.only.split(",") if name]
    if set(only) - set(BENCHMARKS):
        parser.error(f"--only takes {','.join(BENCHMARKS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # inherited by both sides' processes
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    args.folder = NAMED_FOLDERS[args.model](print)
    args.work = args.work or harness_home() / "bench" / f"fidelity-{args.model}"
    args.work.mkdir(parents=True, exist_ok=True)
    args.data_dir = harness_home() / "bench" / "lmeval_data"
    export_lmeval_data(args.data_dir)
    # The include folder lm-eval reads: our YAMLs plus the task code they name, from lm-eval's own installation.
    assemble = ("import sys; sys.path.insert(0, sys.argv[1]); import throughput, pathlib; "
                "throughput.assemble_include_folder(pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]))")
    subprocess.run([args.lmeval_python, "-c", assemble, str(REPO / "bench"), str(REPO / "bench" / "lmeval_tasks"),
                    str(args.work / "lmeval_tasks")], check=True)
    print(f"model {args.model} ({args.folder}); records in {args.work}", flush=True)
    rows = []
    for name in only:
        print(f"\n== {name}", flush=True)
        run_sides(args, name)
        if (args.work / f"ours_{name}" / "results.json").is_file() and \
                list((args.work / f"lmeval_{name}").glob("*/results_*.json")):
            rows += compare(args, name)
    if args.output:
        args.output.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
