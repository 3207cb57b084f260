"""MT-Bench's pairwise comparison, `harness judge RUN_A RUN_B` (harness/commands/judge.py): FastChat's rule for a
match judged in both orders, the win rate, position consistency, first-position share and the balanced win as
defined, every turn judged in both orders on real run folders, and bad input refused in one line."""

import json

import pytest

from harness.cli import main


def test_a_match_is_decided_only_when_both_orders_agree():
    from tasks.mt_bench_judging import match_outcome

    # FastChat's rule (show_result.py): the first order's winner if the second order names the same, else a tie.
    assert match_outcome("A", "B") == "model_1" and match_outcome("B", "A") == "model_2"
    assert match_outcome("A", "A") == "tie" and match_outcome("B", "B") == "tie"  # flipped with the order
    assert match_outcome("tie", "B") == "tie" and match_outcome("A", "tie") == "tie"
    assert match_outcome(None, "A") is None and match_outcome("A", None) is None  # a failed judgment: dropped


def test_win_rate_consistency_and_first_position_are_counted_as_defined():
    from harness.commands.judge import summarise

    verdicts = [("A", "B"), ("A", "A"), ("B", "A"), ("A", "B"), (None, "B"), ("tie", "tie")]
    matches = []
    for number, (first, second) in enumerate(verdicts):
        from tasks.mt_bench_judging import match_outcome

        matches.append({"question_id": str(number // 2), "verdict_a_first": first, "verdict_b_first": second,
                        "outcome": match_outcome(first, second)})
    row = summarise(matches)
    # Decided: 5 (one has a failed judgment): wins 2, loss 1, ties 2 (one flip, one tie both ways).
    assert (row["decided"], row["win"], row["loss"], row["tie"], row["failures"]) == (5, 2, 1, 2, 1)
    assert row["win_rate"] == pytest.approx((2 + 0.5 * 2) / 5, abs=1e-12)
    assert row["consistency"] == pytest.approx(4 / 5, abs=1e-12)  # all but the flip
    # Decisive single verdicts: A 5 times, B 4 times (the failed match's B included): the first shown, 5 of 9.
    assert row["first_position"] == pytest.approx(5 / 9, abs=1e-12)
    low, high = row["first_position_ci95"]
    assert low < 5 / 9 < high


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, tiny_chat_model):
    """Two finished MT-Bench runs of the tiny model (the second with another seed: other sampled answers) and a
    run of fewer questions."""
    root = tmp_path_factory.mktemp("runs")
    base = ["run", "--model", f"hf:{tiny_chat_model}", "--tasks", "mt_bench_writing,mt_bench_math",
            "--apply-chat-template", "--max-new-tokens", "4", "--judge-max-failures", "1"]
    for name, extra in (("a", ["--limit", "2"]), ("b", ["--limit", "2", "--seed", "7"]), ("short", ["--limit", "1"])):
        assert main([*base, *extra, "--output", str(root / name)]) == 0
    return root


def test_harness_judge_judges_every_turn_in_both_orders_and_refuses_other_questions(tmp_path, capsys, tiny_runs,
                                                                                     tiny_chat_model):
    judge = ["--judge", f"hf:{tiny_chat_model}", "--max-new-tokens", "4", "--judge-max-failures", "1"]
    assert main(["judge", str(tiny_runs / "a"), str(tiny_runs / "b"), *judge, "--output", str(tmp_path / "j")]) == 0
    result = json.loads((tmp_path / "j" / "pairwise.json").read_text())
    matches = [json.loads(line) for line in (tmp_path / "j" / "judgments.jsonl").read_text().splitlines()]
    assert len(matches) == 2 * 2 * 2 and result["judge"]["judgments"] == {"mt_bench:pairwise": 16}
    assert {(m["category"], m["question_id"], m["turn"]) for m in matches} == {
        (c, q, t) for c, qs in (("writing", ("81", "82")), ("math", ("111", "112"))) for q in qs for t in (1, 2)}
    assert result["summary"]["overall"]["failures"] == 16  # a random model writes no verdict
    capsys.readouterr()
    # Runs of different questions, RUN_B with --verbosity-check, a run without MT-Bench: one line, exit 2.
    for arguments, said in (([str(tiny_runs / "a"), str(tiny_runs / "short")], "different MT-Bench questions"),
                            ([str(tiny_runs / "a"), str(tiny_runs / "b"), "--verbosity-check"], "not both"),
                            ([str(tiny_runs / "a")], "give RUN_B")):
        assert main(["judge", *arguments, *judge, "--output", str(tmp_path / "refused")]) == 2
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1, err
    # Too many unreadable verdicts: refused, with the share named.
    assert main(["judge", str(tiny_runs / "a"), "--verbosity-check", "--judge", f"hf:{tiny_chat_model}",
                 "--max-new-tokens", "4", "--output", str(tmp_path / "strict")]) == 2
    assert "16 of 16 judgments (100%, above --judge-max-failures 20%)" in capsys.readouterr().err


def test_harness_judge_by_logprob_gives_every_match_a_verdict(tmp_path, tiny_runs, tiny_chat_model):
    assert main(["judge", str(tiny_runs / "a"), "--verbosity-check", "--judge", f"hf:{tiny_chat_model}",
                 "--judge-scoring", "logprob", "--output", str(tmp_path / "j")]) == 0
    result = json.loads((tmp_path / "j" / "pairwise.json").read_text())
    matches = [json.loads(line) for line in (tmp_path / "j" / "judgments.jsonl").read_text().splitlines()]
    overall = result["summary"]["overall"]
    assert overall["failures"] == 0 and overall["decided"] == overall["matches"] == 8
    for match in matches:
        for verdict, chances in zip((match["verdict_a_first"], match["verdict_b_first"]),
                                    match["verdict_probabilities"]):
            assert sum(chances) == pytest.approx(1, abs=1e-12)
            assert verdict == ("A", "B", "tie")[chances.index(max(chances))]
    assert result["judge_scoring"] == "logprob" and result["judge_replies"] == ["[[A]]", "[[B]]", "[[C]]"]


def test_the_balanced_win_averages_both_orders_and_cancels_a_pure_position_bias():
    from harness.commands.judge import balanced_win, summarise

    # A judge whose probabilities follow the position alone: RUN_A's chance is one half.
    assert balanced_win([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]]) == pytest.approx(0.5, abs=1e-12)
    # RUN_A first gets 0.6, second 0.5 (as B), ties 0.1 and 0.2: 0.55 + 0.075.
    assert balanced_win([[0.6, 0.3, 0.1], [0.3, 0.5, 0.2]]) == pytest.approx(0.625, abs=1e-12)
    matches = [{"question_id": str(q), "verdict_a_first": "A", "verdict_b_first": "A", "outcome": "tie",
                "verdict_probabilities": [[0.8, 0.1, 0.1], [0.6 + d, 0.3 - d, 0.1]]}
               for q, d in ((1, 0.0), (1, 0.1), (2, 0.2), (3, 0.0))]
    row = summarise(matches)
    expected = [(0.8 + 0.3 - d) / 2 + 0.05 for d in (0.0, 0.1, 0.2, 0.0)]
    assert row["balanced_win"] == pytest.approx(sum(expected) / 4, abs=1e-12)
    low, high = row["balanced_win_ci95"]
    assert low < row["balanced_win"] < high and row["win_rate"] == 0.5  # every verdict a flip: all ties
