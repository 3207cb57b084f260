"""MT-Bench as a task (tasks/mt_bench.py): FastChat's questions, temperatures and turns; each turn judged with
FastChat's prompt; scores pooled as FastChat's show_result.py pools them, unreadable judgments counted and left out,
too many of them refused; the judge's work cached, so a run killed while judging resumes without asking again; a
judge behind `harness serve` judges as the same model here does."""

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest

import tasks as task_registry
from harness.cli import main
from harness.engine.cache import CachingModel, ResponseCache
from harness.engine.evaluator import PromptFormat, evaluate
from harness.engine.model_judge import ModelJudge
from harness.engine.prompts import Prompt
from harness.engine.task import TaskOptions
from harness.errors import UserError
from harness.models.registry import load_model
from harness.record.run_folder import read_run
from tasks.mt_bench import MTBench
from tasks.mt_bench_judging import judge_messages, load_judge_prompts, prompt_name, single_prompt

CATEGORIES = ["writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"]
FASTCHAT_TEMPERATURE = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
                        "reasoning": 0.0, "stem": 0.1, "humanities": 0.1}  # fastchat/llm_judge/common.py


class RecordingJudge:
    """Stands in for the judge model where the task's own arithmetic is under test: it replies with the given
    texts, in order, and keeps what it was asked."""

    def __init__(self, replies):
        self.replies, self.calls = list(replies), []

    def identity(self):
        return {"spec": "recording-judge"}

    def __call__(self, conversations, *, max_tokens, temperature, scope):
        self.calls.append({"conversations": conversations, "max_tokens": max_tokens, "temperature": temperature,
                           "scope": scope})
        replies, self.replies = self.replies[:len(conversations)], self.replies[len(conversations):]
        return replies


def task(category, judge=None, max_failures=0.2):
    return MTBench(name=f"mt_bench_{category}", category=category, judge=(lambda: judge) if judge else None,
                   max_failures=max_failures)


def test_the_questions_turns_and_temperatures_are_fastchats():
    assert task_registry.expand(["mt_bench"]) == [f"mt_bench_{c}" for c in CATEGORIES]
    ids = set()
    for category in CATEGORIES:
        mt = task(category)
        docs = mt.docs()
        assert len(docs) == 10
        ids |= {doc.id for doc in docs}
        for doc in docs:
            # Math, reasoning and coding are graded against GPT-4's two-turn reference answer, the others without.
            assert (doc.fields["reference"] is not None) == (category in ("math", "reasoning", "coding"))
            (first,) = mt.requests(doc)
            assert first.context == Prompt(doc.fields["turns"][0], conversation=True)
            assert (first.max_tokens, first.temperature, first.top_p, first.stop) == \
                (1024, FASTCHAT_TEMPERATURE[category], 1.0, ())
            (second,) = mt.follow_up(doc, ["  My first answer.\n"])
            # The second turn reads the first answer as FastChat keeps it: stripped.
            assert second.context == Prompt(doc.fields["turns"][1], shots=((doc.fields["turns"][0],
                                                                            "My first answer."),), conversation=True)
            assert mt.follow_up(doc, ["a", "b"]) == []
    assert len(ids) == 80


def test_each_turn_is_judged_with_fastchats_prompt_and_scores_pool_as_show_result():
    mt_writing, mt_math = task("writing"), task("math")
    answered = {"writing": [(doc, [f" first {doc.id} ", f"second {doc.id}"]) for doc in mt_writing.docs()[:3]],
                "math": [(doc, [f"x{doc.id}", f"y{doc.id}"]) for doc in mt_math.docs()[:3]]}
    # Readable by the first rule, by the backup rule, unreadable, fractional: as FastChat's parsing reads them.
    replies = {"writing": ["Rating: [[8]]", "[[3]]", "no rating", "[7]", "[[9.5]]", "[[2]]"],
               "math": ["[[1]]", "[[10]]", "[[4]]", "???", "[[6]]", "[[6]]"]}
    rows = []
    for category, mt in (("writing", mt_writing), ("math", mt_math)):
        judge = RecordingJudge(replies[category])
        mt.judge = lambda judge=judge: judge
        scores = mt.score_all(answered[category])
        (call,) = judge.calls
        assert (call["max_tokens"], call["temperature"], call["scope"]) == (2048, 0.0, f"mt_bench_{category}:judge")
        prompts = load_judge_prompts()
        expected = []
        for doc, responses in answered[category]:
            for turn in (1, 2):
                prompt = prompts[prompt_name("single", category, turn)]
                user = single_prompt(prompt, doc.fields["turns"], [r.strip() for r in responses], turn,
                                     doc.fields["reference"])
                expected.append(judge_messages(prompt, user))
        assert call["conversations"] == expected
        for (doc, _), score, position in zip(answered[category], scores, range(0, 6, 2)):
            assert score["untrusted_judgments"] == replies[category][position:position + 2]
            for turn, rating in zip((1, 2), score["ratings"]):
                rows.append({"model": category, "turn": turn, "score": -1 if rating is None else rating})
        result = evaluate_scores(mt, scores)
        # show_result.py's "Average" and per-turn means, on FastChat's rows (-1 for an unreadable judgment).
        frame = pd.DataFrame([row for row in rows if row["model"] == category])
        frame = frame[frame["score"] != -1]
        assert result["score"] == pytest.approx(frame["score"].mean(), abs=1e-12)
        for turn in (1, 2):
            assert result[f"score_turn_{turn}"] == pytest.approx(frame[frame["turn"] == turn]["score"].mean(),
                                                                 abs=1e-12)
        assert result["judge_failures"] == pytest.approx(1 / 6, abs=1e-12)


def evaluate_scores(mt, scores):
    from harness.engine.evaluator import aggregate_scores

    return aggregate_scores(scores, mt.metrics, seed=0)


def test_too_many_unreadable_judgments_fail_the_task_in_one_line():
    docs = task("stem").docs()[:2]
    answered = [(doc, ["a", "b"]) for doc in docs]
    replies = ["[[5]]", "I cannot judge </p>\n<script>", "[[5]]", "[[6]]"]  # 1 of 4 unreadable: 25 %
    with pytest.raises(UserError) as refused:
        task("stem", RecordingJudge(replies)).score_all(answered)
    message = str(refused.value)
    assert "\n" not in message and "1 of 4 judgments (25%, above --judge-max-failures 20%)" in message
    assert "'I cannot judge </p>\\n<script>'" in message  # the judge's text, quoted and escaped
    scores = task("stem", RecordingJudge(replies), max_failures=0.25).score_all(answered)
    assert [s["judge_failures"] for s in scores] == [[1, 2], [0, 2]]


def test_judgments_go_through_the_response_cache_and_a_second_run_asks_nothing(tmp_path, tiny_chat_model):
    model = load_model(f"hf:{tiny_chat_model}")
    chat = PromptFormat(chat_template=True, max_new_tokens=4)
    runs = []
    for _ in range(2):
        cached = CachingModel(model, ResponseCache(tmp_path / "cache.sqlite"), chat.describe(model))
        judge = ModelJudge(cached, batch_size=None, seed=0, max_new_tokens=4)
        mt = task_registry.build("mt_bench_coding", TaskOptions(judge=lambda judge=judge: judge,
                                                                        judge_max_failures=1.0))
        evaluation = evaluate(cached, [mt], limit=2, prompt_format=chat)
        runs.append((evaluation, dict(cached.hits), dict(cached.computed), judge.record()))
    (first, _, computed, record), (second, hits, recomputed, _) = runs
    # Two turns answered and two judged per question; the second run finds all eight in the cache.
    assert computed == {"mt_bench_coding": 4, "mt_bench_coding:judge": 4} and not any(recomputed.values())
    assert hits == computed
    assert second.samples == first.samples
    assert record["judgments"] == {"mt_bench_coding:judge": 4} and record["max_new_tokens"] == 4
    assert record["response_cache"] == {"hits": {"mt_bench_coding:judge": 0}, "computed": {"mt_bench_coding:judge": 4}}
    assert runs[1][3]["response_cache"]["hits"] == {"mt_bench_coding:judge": 4}
    assert record["spec"] == f"hf:{tiny_chat_model}"
    # A random model writes no rating: every judgment failed, and no score is made of them.
    result = first.results["mt_bench_coding"]
    assert result["judge_failures"] == 1.0 and result["score"] != result["score"]  # NaN
    # The judge's identity is part of the prompt hash: another judge, another hash.
    other = task_registry.build("mt_bench_coding", TaskOptions(judge=lambda: RecordingJudge([]),
                                                               judge_max_failures=1.0))
    assert other.settings()["judge"] != mt.settings()["judge"]


def exit_code(arguments):
    try:
        return main(arguments)
    except SystemExit as exited:  # argparse's refusal of a flag's value
        return exited.code


def test_bad_judge_input_is_one_line(tmp_path, capsys, tiny_chat_model):
    base = ["run", "--model", f"hf:{tiny_chat_model}", "--limit", "1", "--output", str(tmp_path / "run")]
    cases = [
        (["--tasks", "mt_bench_writing"], "mt_bench_writing is a conversation"),
        (["--tasks", "mmlu_anatomy", "--judge", "smollm2-135m"], "--judge applies to judged tasks"),
        (["--tasks", "mt_bench_writing", "--apply-chat-template", "--judge", "hf:/no/such/folder"], "/no/such"),
        (["--tasks", "mt_bench_writing", "--apply-chat-template", "--judge-max-failures", "1.5"], "1.5"),
    ]
    for flags, said in cases:
        code = exit_code([*base, *flags])
        err = capsys.readouterr().err
        assert code == 2 and said in err and "Traceback" not in err, (flags, err)
        assert not (tmp_path / "run").exists()


# ---- the real model, in processes --------------------------------------------------------------------------

COMMAND = ["run", "--model", "smollm2-135m", "--tasks", "mt_bench_math", "--limit", "2", "--apply-chat-template",
           "--max-new-tokens", "24", "--judge-max-failures", "1"]
TOTAL = 2 * 2 + 2 * 2  # two turns answered and two judged per question


def start(arguments, cache):
    env = {**os.environ, "HARNESS_CACHE_DB": str(cache), "HARNESS_COMMIT_EVERY": "1"}
    return subprocess.Popen([sys.executable, "-m", "harness", *arguments], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def stored(cache):
    if not cache.exists():
        return 0
    connection = sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=30)
    try:
        return connection.execute("SELECT count(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        connection.close()


@pytest.mark.slow
def test_a_run_killed_while_judging_resumes_without_asking_again(tmp_path):
    """(That a resumed run ends with an uninterrupted run's numbers is tests/test_reliability.py's; here, that the
    judge's work resumes like the answers.)"""
    cache, folder = tmp_path / "cache.sqlite", tmp_path / "run"
    process = start([*COMMAND, "--output", str(folder)], cache)
    deadline = time.monotonic() + 600
    while stored(cache) < 5:  # every answer and the first judgment stored: killed while judging
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    kept = stored(cache)
    assert 5 <= kept < TOTAL and not (folder / "results.json").exists()

    resumed = start(["run", "--resume", str(folder)], cache)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-2000:]
    record, samples = read_run(folder)
    use = record["settings"]["response_cache"]
    assert sum(use["hits"].values()) == kept and sum(use["computed"].values()) == TOTAL - kept
    assert use["hits"]["mt_bench_math"] == 4  # no answer asked again
    assert record["judge"]["spec"] == "smollm2-135m" and record["judge"]["judgments"] == {"mt_bench_math:judge": 4}
    assert "mt_bench_math:judge" in record["systems"]["tasks"]  # the judge's work, profiled apart
    assert record["tasks"]["mt_bench_math"]["judge"]["fingerprint"] == record["model"]["fingerprint"]
    # Asked once more, everything comes from the cache, and scores the same.
    again = start([*COMMAND, "--output", str(tmp_path / "again")], cache)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    record_again, samples_again = read_run(tmp_path / "again")
    assert sum(record_again["settings"]["response_cache"]["computed"].values()) == 0
    assert [s["scores"] for s in samples_again] == [s["scores"] for s in samples]


@pytest.mark.slow
def test_a_judge_behind_harness_serve_judges_as_the_same_model_here(tmp_path, smollm2, runs_share_smollm2,
                                                                    tiny_chat_model):
    from harness.serving.server import ServerSettings
    from tests.test_serving import Server

    running = Server(smollm2, ServerSettings(max_batch=8, max_queued=64, max_body_bytes=1 << 20, api_key=None))
    try:
        base = ["run", "--model", f"hf:{tiny_chat_model}", "--tasks", "mt_bench_reasoning", "--limit", "2",
                "--apply-chat-template", "--max-new-tokens", "16", "--judge-max-failures", "1"]
        assert main([*base, "--judge", f"openai:smollm2-135m@{running.root}/v1", "--output",
                     str(tmp_path / "remote")]) == 0
        assert main([*base, "--judge", "smollm2-135m", "--output", str(tmp_path / "local")]) == 0
    finally:
        running.close()
    remote, remote_samples = read_run(tmp_path / "remote")
    local, local_samples = read_run(tmp_path / "local")
    assert remote["judge"]["implementation"] == "openai-api" and local["judge"]["implementation"] != "openai-api"
    # The server applies the same chat template to the same messages: the same judgments, token for token.
    judgments = lambda samples: [s["scores"]["untrusted_judgments"] for s in samples]
    assert judgments(remote_samples) == judgments(local_samples)
    assert all(j for pair in judgments(remote_samples) for j in pair)
    assert remote["tasks"]["mt_bench_reasoning"]["prompt_hash"] != local["tasks"]["mt_bench_reasoning"]["prompt_hash"]
    print("\n" + json.dumps(judgments(remote_samples))[:400])


# ---- scoring by log-probabilities (G-Eval) -----------------------------------------------------------------


def test_logprob_scoring_weighs_each_rating_by_the_judges_probability(tmp_path, tiny_chat_model):
    from harness.engine.requests import LoglikelihoodRequest
    from tasks.mt_bench import RATING_REPLIES

    model = load_model(f"hf:{tiny_chat_model}")
    judge = ModelJudge(model, batch_size=None, seed=0, max_new_tokens=None)
    mt = MTBench(name="mt_bench_stem", category="stem", judge=lambda: judge, scoring="logprob")
    docs = mt.docs()[:2]
    scores = mt.score_all([(doc, ["An answer.", "Another."]) for doc in docs])
    prompts = load_judge_prompts()
    for doc, score in zip(docs, scores):
        for turn, rating, chances in zip((1, 2), score["ratings"], score["rating_probabilities"]):
            prompt = prompts[prompt_name("single", "stem", turn)]
            messages = judge_messages(prompt, single_prompt(prompt, doc.fields["turns"], ["An answer.", "Another."],
                                                            turn, None))
            context = model.apply_chat_template(messages)
            logprobs = [r.logprob for r in model.loglikelihood([LoglikelihoodRequest(context, reply)
                                                                for reply in RATING_REPLIES])]
            # G-Eval's score: the ratings' probabilities renormalised over the ten, then their mean.
            total = sum(math.exp(lp) for lp in logprobs)
            assert chances == pytest.approx([math.exp(lp) / total for lp in logprobs], rel=1e-9)
            assert rating == pytest.approx(sum(k * math.exp(lp) / total for k, lp in zip(range(1, 11), logprobs)),
                                           rel=1e-9)
            assert 1 <= rating <= 10
        assert score["judge_failures"] == [0, 2]
    assert mt.settings()["judge_scoring"] == "logprob" and "judge_temperature" not in mt.settings()
    assert judge.record()["judgments"] == {"mt_bench_stem:judge": 4}


def test_logprob_scoring_refuses_a_judge_behind_chat_completions(monkeypatch):
    from harness.engine.model_judge import ModelJudge

    class ChatOnly:
        spec, implementation = "openai:judge@http://127.0.0.1:1/v1", "openai-api"

    with pytest.raises(UserError, match="no log-probabilities of a given reply; use --judge-scoring generate"):
        ModelJudge(ChatOnly(), batch_size=None, seed=0, max_new_tokens=None).likelihoods([[]], ["x"], scope="s")
