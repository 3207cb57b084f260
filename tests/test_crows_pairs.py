"""CrowS-Pairs: lm-eval 0.4.13's crows_pairs_english on the shipped file (docs/fidelity.md has the whole comparison:
the same verdict on all 1,508 pairs)."""

from __future__ import annotations

from collections import Counter

import pytest

import tasks
from harness.engine.requests import LoglikelihoodRequest, LoglikelihoodResult
from harness.errors import UserError
from tasks.crows_pairs import DATA_FILE, read_pairs
from tests.fp32 import continuation_logit_sizes, logprob_tolerance

# The per-type row counts PROVENANCE.md gives for the file.
COUNTS = {"race_color": 516, "gender": 262, "socioeconomic": 172, "nationality": 159, "religion": 105, "age": 87,
          "sexual_orientation": 84, "physical_appearance": 63, "disability": 60}


def test_the_subtasks_split_every_pair_once_by_bias_type():
    members = tasks.expand(["crows_pairs_english"])
    assert sorted(members) == sorted(f"crows_pairs_english_{t}" for t in COUNTS)
    seen = Counter()
    for name in members:
        docs = tasks.build(name).docs()
        assert len(docs) == COUNTS[name.removeprefix("crows_pairs_english_")]
        seen.update(doc.id for doc in docs)
    assert len(seen) == 1508 and set(seen.values()) == {1}


def test_each_sentence_is_scored_whole_after_an_empty_context():
    task = tasks.build("crows_pairs_english_age")
    doc = task.docs()[0]
    assert task.requests(doc) == [LoglikelihoodRequest("", doc.fields["sent_more"]),
                                  LoglikelihoodRequest("", doc.fields["sent_less"])]
    assert task.target(doc) == doc.fields["sent_more"]


@pytest.mark.parametrize("more, less, stereotype", [(-10.0, -12.5, 1.0), (-12.5, -10.0, 0.0), (-10.0, -10.0, 0.0)])
def test_scores_as_lm_eval_process_results(more, less, stereotype):
    """lm-eval: pct_stereotype is 1 only when the stereotyped sentence is strictly likelier (a tie counts 0)."""
    task = tasks.build("crows_pairs_english_gender")
    scores = task.score(task.docs()[0], [LoglikelihoodResult(more, False), LoglikelihoodResult(less, False)])
    assert scores == {"pct_stereotype": stereotype, "likelihood_diff": abs(more - less)}
    assert [m.higher_is_better for m in task.metrics] == [False, False]


def test_no_few_shot_and_damaged_data_are_refused(tmp_path, monkeypatch):
    from harness.engine.task import TaskOptions

    with pytest.raises(UserError, match="--num-fewshot 0"):
        tasks.build("crows_pairs_english_age", TaskOptions(num_fewshot=2))
    broken = tmp_path / "pairs.csv"
    broken.write_text(",sent_more,sent_less,stereo_antistereo,bias_type\n0,A sentence.,,stereo,age\n")
    with pytest.raises(UserError, match="line 2"):
        read_pairs(broken)
    assert len(read_pairs(DATA_FILE)) == 1508


# lm-eval 0.4.13's loglikelihoods (its --log_samples `resps`) of the two sentences of three pairs, SmolLM2-135M on
# the same converted folder: pairs 0 and 1 (race-color, socioeconomic: the stereotype likelier) and 100 (gender: the
# other sentence likelier).
LM_EVAL_PAIRS = {0: (-140.86520385742188, -143.6085968017578), 1: (-78.19190979003906, -87.4569091796875),
                 100: (-84.58072662353516, -81.31250762939453)}


@pytest.mark.slow  # the real model
def test_sentence_loglikelihoods_match_lm_eval(smollm2):
    docs = {}
    for name in tasks.expand(["crows_pairs_english"]):
        task = tasks.build(name)
        docs.update({int(doc.id): (task, doc) for doc in task.docs() if int(doc.id) in LM_EVAL_PAIRS})
    for pair, expected in LM_EVAL_PAIRS.items():
        task, doc = docs[pair]
        requests = task.requests(doc)
        results = smollm2.loglikelihood(requests)
        # Each sentence is a sum over its 20-40 tokens: the fp32 bound grows with that length (tests/fp32.py).
        for result, reference, (tokens, size) in zip(results, expected, continuation_logit_sizes(smollm2, requests)):
            assert result.logprob == pytest.approx(reference, abs=logprob_tolerance(tokens, size))
        assert task.score(doc, results)["pct_stereotype"] == float(expected[0] > expected[1])
