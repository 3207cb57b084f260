"""`harness judge RUN_A RUN_B --judge SPEC`: MT-Bench's pairwise comparison of two runs' answers, as FastChat's
gen_judgment.py --mode pairwise-baseline and show_result.py make it (RUN_B the baseline), with the judge's position
bias measured on the way.

Each question's two turns are two matches; each match is judged twice, RUN_A's answer shown first (as A), then
RUN_B's, with FastChat's prompts and verdict rules (tasks/mt_bench_judging.py). Per category and overall:
  win, loss, tie   RUN_A's outcomes; a verdict that flips with the order is a tie (FastChat's rule)
  win_rate         (win + tie / 2) / matches, FastChat's win_rate_adjusted, with a 95 % interval clustered on the
                   question (its two turns are one unit: harness/stats.py)
  consistency      the share of matches whose two verdicts agree once the order is undone (position consistency)
  first_position   the share of decisive verdicts (A or B) that chose the answer shown first, with Wilson's
                   interval: each match is shown in both orders, so a judge without position bias gives 0.5
  failures         judgments with no readable verdict; their matches are left out, as FastChat drops them, and
                   above --judge-max-failures the command fails rather than report the rest
With --verbosity-check RUN_A is judged against its own answers padded by repetition (each answer, then "In other
words:" and the answer again: Zheng et al. 2023, sec. 3.3's verbosity bias, their "repetitive list" attack in its
simplest form). Nothing is added, so every win of the padded answer is the judge swayed by length.
With --judge-scoring logprob (not FastChat's; tasks/mt_bench.py) each verdict is the likeliest of the replies
"[[A]]", "[[B]]", "[[C]]" as the judge's answer: it never fails to read. Its probabilities also give
  balanced_win     the mean over matches of RUN_A's probability of winning averaged over both orders, a tie
                   counting half: (P(A | A first) + P(B | B first)) / 2 + (P(C | A first) + P(C | B first)) / 4,
                   Wang et al. 2023's balanced position calibration (arXiv 2305.17926, sec. 3.2) on probabilities.
                   A judge whose probabilities follow the position alone gives 0.5, and a preference too small
                   to flip its verdicts still shows; with its interval clustered on the question

Judgments go through the response cache: a `harness judge` killed part-way asks again only what it lacks. It
writes pairwise.json and judgments.jsonl (the judge's own text: hostile) into runs/judge-<time>/ or --output.
Not here: a length-controlled win rate (AlpacaEval 2's regression on length differences); see docs/judge.md.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness import stats
from harness.engine.cache import CachingModel, ResponseCache
from harness.engine.evaluator import PromptFormat
from harness.engine.model_judge import ModelJudge
from harness.errors import UserError
from harness.models.registry import load_model
from harness.record.atomic import write_atomic
from harness.record.run_folder import check_output_folder, read_run
from tasks.mt_bench import probabilities, read_questions, read_references
from tasks.mt_bench_judging import (
    JUDGE_MAX_TOKENS,
    JUDGE_TEMPERATURE,
    NEED_REFERENCE,
    WINNER_A_FIRST,
    WINNER_B_FIRST,
    judge_messages,
    load_judge_prompts,
    match_outcome,
    pairwise_prompt,
    parse_verdict,
    prompt_name,
)

TASK_PREFIX = "mt_bench_"
PADDING = "\n\nIn other words:\n\n"
VERDICT_REPLIES = ["[[A]]", "[[B]]", "[[C]]"]  # what --judge-scoring logprob weighs: A better, B better, a tie


def run_answers(folder: Path) -> tuple[dict[tuple[str, str], list[str]], dict]:
    """A finished run's MT-Bench answers, {(category, question id): [turn 1, turn 2]} as FastChat keeps them
    (stripped), and its record."""
    record, samples = read_run(folder)
    answers = {(s["task"].removeprefix(TASK_PREFIX), s["doc_id"]): [turn.strip() for turn in s["response"]]
               for s in samples if s["task"].startswith(TASK_PREFIX)}
    if not answers:
        raise UserError(f"{folder} has no MT-Bench answers; run `harness run --tasks mt_bench ...` first")
    return answers, record


def questions_file_hashes(record: dict) -> set[str]:
    return {r["data_sha256"].get("question.jsonl") for name, r in record["tasks"].items()
            if name.startswith(TASK_PREFIX)}


def pad(answer: str) -> str:
    return answer + PADDING + answer


def judge_runs(run_a: Path, run_b: Path | None, judge_spec: str, device: str, dtype: str, verbosity_check: bool,
               max_failures: float, max_new_tokens: int | None, use_cache: bool, output: Path | None,
               scoring: str = "generate") -> int:
    answers_a, record_a = run_answers(run_a)
    if verbosity_check == (run_b is not None):
        raise UserError("give RUN_B, or --verbosity-check to judge RUN_A against its own padded answers; not both")
    if run_b is None:
        answers_b, name_b = {key: [pad(turn) for turn in turns] for key, turns in answers_a.items()}, "padded"
    else:
        answers_b, record_b = run_answers(run_b)
        name_b = str(run_b)
        only = sorted(set(answers_a) ^ set(answers_b))
        if only or questions_file_hashes(record_a) != questions_file_hashes(record_b):
            example = f"e.g. {only[0][0]} question {only[0][1]}" if only else "from different question files"
            raise UserError(f"{run_a} and {run_b} answered different MT-Bench questions ({len(answers_a)} and "
                            f"{len(answers_b)} answered, {example}); compare runs of the same --tasks and --limit")
    stamp = datetime.now(UTC)
    folder = output or Path("runs") / f"judge-{stamp:%Y%m%d-%H%M%S}"
    check_output_folder(folder)
    judge = load_judge(judge_spec, device, dtype, use_cache, max_new_tokens)
    try:
        matches, conversations = build_matches(answers_a, answers_b)
        judgments, verdicts = judge_matches(judge, conversations, scoring, judge_spec, max_failures)
    finally:
        judge.model.close()
    for number, match in enumerate(matches):
        match["verdict_a_first"], match["verdict_b_first"] = verdicts[2 * number:2 * number + 2]
        match["outcome"] = match_outcome(*verdicts[2 * number:2 * number + 2])
        # The judge's own text (hostile), or the probabilities it gave [[A]], [[B]] and [[C]].
        match["verdict_probabilities" if scoring == "logprob" else "untrusted_judgments"] = \
            judgments[2 * number:2 * number + 2]
    categories = list(dict.fromkeys(match["category"] for match in matches))
    summary = {"overall": summarise(matches),
               **{c: summarise([m for m in matches if m["category"] == c]) for c in categories}}
    folder.mkdir(parents=True, exist_ok=True)
    result = {"created": stamp.isoformat(), "run_a": str(run_a), "run_b": name_b, "model_a": record_a["model"]["spec"],
              "model_b": "padded" if run_b is None else record_b["model"]["spec"],
              "verbosity_check": verbosity_check, "judge": judge.record(), "judge_mode": "pairwise",
              "judge_scoring": scoring,
              **({"judge_replies": VERDICT_REPLIES} if scoring == "logprob" else
                 {"judge_temperature": JUDGE_TEMPERATURE, "judge_max_tokens": JUDGE_MAX_TOKENS}),
              "summary": summary}
    write_atomic(folder / "pairwise.json", json.dumps(result, indent=2, allow_nan=False))
    write_atomic(folder / "judgments.jsonl", "".join(json.dumps(m, ensure_ascii=False) + "\n" for m in matches))
    print_pairwise(result)
    print(f"results: {folder}")
    return 0


def load_judge(judge_spec: str, device: str, dtype: str, use_cache: bool, max_new_tokens: int | None) -> ModelJudge:
    try:
        adapter = load_model(judge_spec, device=device, dtype=dtype,
                             progress=lambda message: print(message, file=sys.stderr))
    except UserError as error:
        raise UserError(f"--judge {judge_spec}: {error}") from None
    model = CachingModel(adapter, ResponseCache(), PromptFormat(chat_template=True).describe(adapter)) \
        if use_cache else adapter
    return ModelJudge(model, batch_size=None, seed=0, max_new_tokens=max_new_tokens)


def judge_matches(judge: ModelJudge, conversations: list, scoring: str, judge_spec: str,
                  max_failures: float) -> tuple[list, list]:
    """The judgments (the judge's text, or with logprob scoring its probabilities of [[A]], [[B]], [[C]]) and the
    verdicts read from them, in the conversations' order."""
    if scoring == "logprob":  # the likeliest of the three verdicts
        weights = judge.likelihoods(conversations, VERDICT_REPLIES, scope="mt_bench:pairwise")
        judgments = [probabilities(logprobs) for logprobs in weights]
        return judgments, [("A", "B", "tie")[chances.index(max(chances))] for chances in judgments]
    judgments = judge(conversations, max_tokens=JUDGE_MAX_TOKENS, temperature=JUDGE_TEMPERATURE,
                      scope="mt_bench:pairwise")
    verdicts = [parse_verdict(judgment) for judgment in judgments]
    refuse_unreadable(judge_spec, judgments, verdicts, max_failures)
    return judgments, verdicts


def build_matches(answers_a: dict, answers_b: dict) -> tuple[list[dict], list[list[dict]]]:
    """Every turn of every question, each judged in both orders: the matches, and the judge conversations in order
    (RUN_A's answer as A, then RUN_B's as A)."""
    prompts = load_judge_prompts()
    questions = {}
    for category in dict.fromkeys(category for category, _ in answers_a):
        questions.update({(category, str(q["question_id"])): q["turns"] for q in read_questions(category)})
    references = read_references()
    matches, conversations = [], []
    for key in sorted(answers_a, key=lambda key: int(key[1])):
        category, question_id = key
        reference = references[int(question_id)] if category in NEED_REFERENCE else None
        for turn in (1, 2):
            prompt = prompts[prompt_name("pairwise", category, turn)]
            for first, second in ((answers_a[key], answers_b[key]), (answers_b[key], answers_a[key])):
                user = pairwise_prompt(prompt, questions[key], first, second, turn, reference)
                conversations.append(judge_messages(prompt, user))
            matches.append({"category": category, "question_id": question_id, "turn": turn})
    return matches, conversations


def refuse_unreadable(judge_spec: str, judgments: list[str], verdicts: list, max_failures: float) -> None:
    failed = [judgment for judgment, verdict in zip(judgments, verdicts) if verdict is None]
    if judgments and len(failed) / len(judgments) > max_failures:
        raise UserError(f"the judge {judge_spec} gave no readable verdict ([[A]], [[B]] or [[C]]) in {len(failed)} of "
                        f"{len(judgments)} judgments ({len(failed) / len(judgments):.0%}, above --judge-max-failures "
                        f"{max_failures:.0%}), so no win rate is reported; its first such reply began "
                        f"{failed[0][:80]!r}")


def summarise(matches: list[dict]) -> dict:
    decided = [m for m in matches if m["outcome"] is not None]
    outcomes = Counter(m["outcome"] for m in decided)
    values = [{"model_1": 1.0, "tie": 0.5, "model_2": 0.0}[m["outcome"]] for m in decided]
    win_rate, stderr, interval = (stats.aggregate("mean", values, clusters=[m["question_id"] for m in decided])
                                  if values else (None, None, None))
    single = Counter(v for m in matches for v in (m["verdict_a_first"], m["verdict_b_first"]))
    # The answer shown first is A in both orders: a decisive verdict for A chose the first position.
    decisive = single["A"] + single["B"]
    agreeing = [m for m in decided if WINNER_A_FIRST.get(m["verdict_a_first"], "tie")
                == WINNER_B_FIRST.get(m["verdict_b_first"], "tie")]
    balanced = [balanced_win(m["verdict_probabilities"]) for m in matches if "verdict_probabilities" in m]
    balanced_value, _, balanced_interval = (
        stats.aggregate("mean", balanced, clusters=[m["question_id"] for m in matches]) if balanced
        else (None, None, None))
    return {
        "matches": len(matches), "decided": len(decided),
        "win": outcomes["model_1"], "loss": outcomes["model_2"], "tie": outcomes["tie"],
        "win_rate": win_rate, "win_rate_stderr": stderr, "win_rate_ci95": list(interval) if interval else None,
        "consistency": len(agreeing) / len(decided) if decided else None,
        "first_position": single["A"] / decisive if decisive else None,
        "first_position_ci95": list(stats.wilson_interval(single["A"], decisive)) if decisive else None,
        "failures": single[None], "judgments": 2 * len(matches),
        "balanced_win": balanced_value, "balanced_win_ci95": list(balanced_interval) if balanced_interval else None,
    }


def balanced_win(chances: list[list[float]]) -> float:
    """RUN_A's chance of winning a match, both orders averaged: `chances` holds P([[A]]), P([[B]]), P([[C]]) with
    RUN_A's answer first, then with RUN_B's first."""
    (run_a_wins_first, _, tie_first), (_, run_a_wins_second, tie_second) = chances  # second: RUN_A is B
    return (run_a_wins_first + run_a_wins_second) / 2 + (tie_first + tie_second) / 4


def share(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def interval(bounds) -> str:
    return f"[{bounds[0]:.2f}, {bounds[1]:.2f}]" if bounds else "n/a"


def print_pairwise(result: dict) -> None:
    judge = result["judge"]["spec"]
    table = Table(title=f"{result['model_a']} vs {result['model_b']}, judged by {judge} (MT-Bench, pairwise)")
    balanced = result["judge_scoring"] == "logprob"
    for column in ("category", "win", "loss", "tie", "win rate", "95 % CI", "consistency", "first position",
                   "failures", *(["balanced win"] if balanced else [])):
        table.add_column(column, justify="left" if column == "category" else "right")
    for name, row in result["summary"].items():
        table.add_row(name, str(row["win"]), str(row["loss"]), str(row["tie"]), share(row["win_rate"]),
                      interval(row["win_rate_ci95"]), share(row["consistency"]),
                      f"{share(row['first_position'])} {interval(row['first_position_ci95'])}",
                      f"{row['failures']} of {row['judgments']}",
                      *([f"{share(row['balanced_win'])} {interval(row['balanced_win_ci95'])}"] if balanced else []))
    Console().print(table)
