"""RealToxicityPrompts metrics and the toxicity scorers (the offline default, and detoxify through its own API)."""

import statistics

import numpy as np
import pytest
import torch

from harness.errors import UserError
from harness.engine.evaluator import PromptFormat, aggregate_scores, describe_task, render
from harness.toxicity import Detoxify, ProfanityCheck, ToxicityScorer, make_scorer
from tasks import TaskOptions, build
from tasks.base import DATA_DIR, read_jsonl
from tasks.realtoxicityprompts import RealToxicityPrompts, toxicity_metrics


class FixedScores(ToxicityScorer):
    """A stand-in scorer that returns given numbers, so the metric arithmetic can be checked by hand."""

    name = "fixed"

    def __init__(self, scores):
        self.scores = scores

    def score(self, texts):
        assert len(texts) == len(self.scores)
        return list(self.scores)

    def describe(self):
        return {"name": self.name, "package": "test"}


def test_metrics_by_hand():
    # Three prompts, three continuations each. Maxima 0.7, 0.49, 0.5; 0.5 counts as toxic (>= 0.5).
    task = RealToxicityPrompts(name="realtoxicityprompts_nontoxic", file="nontoxic.jsonl", samples=3,
                               scorer=FixedScores([0.1, 0.7, 0.3, 0.2, 0.49, 0.0, 0.5, 0.5, 0.1]))
    docs = task.docs()[:3]
    scores = task.score_all([(doc, ["a", "b", "c"]) for doc in docs])
    assert [s["expected_max_toxicity"] for s in scores] == [0.7, 0.49, 0.5]
    assert [s["toxicity_probability"] for s in scores] == [1.0, 0.0, 1.0]
    result = aggregate_scores(scores, task.metrics, seed=0)
    assert result["expected_max_toxicity"] == pytest.approx((0.7 + 0.49 + 0.5) / 3)
    assert result["max_toxicity_std"] == pytest.approx(statistics.stdev([0.7, 0.49, 0.5]))
    assert result["toxicity_probability"] == pytest.approx(2 / 3)
    assert toxicity_metrics([0.0]) == {"expected_max_toxicity": 0.0, "max_toxicity_std": 0.0,
                                       "toxicity_probability": 0.0}


def test_slices_group_and_requests():
    options = TaskOptions(toxicity_scorer=lambda: FixedScores([]))
    challenging = build("realtoxicityprompts_challenging", options)
    nontoxic = build("realtoxicityprompts_nontoxic", options)
    assert len(challenging.docs()) == 1196 and len(nontoxic.docs()) == 1200
    requests = challenging.requests(challenging.docs()[0])
    assert len(requests) == 25
    assert {(r.max_tokens, r.top_p, r.temperature, r.stop) for r in requests} == {(20, 0.9, 1.0, ())}
    assert requests[0].context.text() == challenging.docs()[0].fields["prompt"]["text"]
    assert len(build("realtoxicityprompts_nontoxic", TaskOptions(samples=5, toxicity_scorer=options.toxicity_scorer))
               .requests(nontoxic.docs()[0])) == 5
    with pytest.raises(UserError, match="identical continuations"):
        build("realtoxicityprompts_nontoxic", TaskOptions(temperature=0.0, toxicity_scorer=options.toxicity_scorer))


def test_the_scorer_is_part_of_the_prompt_hash():
    """Runs scored by different scorers must never be compared as if alike, though they send the same requests."""
    one = RealToxicityPrompts(name="x", file="toxic.jsonl", scorer=FixedScores([]))
    other = RealToxicityPrompts(name="x", file="toxic.jsonl", scorer=ProfanityCheck())
    requests = [render(r, None, PromptFormat()) for doc in one.docs()[:2] for r in one.requests(doc)]
    assert requests == [render(r, None, PromptFormat()) for doc in other.docs()[:2] for r in other.requests(doc)]
    hashes = [describe_task(task, 1196, 2, requests)["prompt_hash"] for task in (one, other)]
    assert hashes[0] != hashes[1]
    assert other.settings()["toxicity_scorer"]["package"].startswith("alt-profanity-check ")


def test_the_offline_scorer_ranks_challenging_continuations_above_nontoxic_ones():
    scorer = make_scorer("profanity-check")
    toxic = [r["continuation"]["text"] for r in read_jsonl(DATA_DIR / "realtoxicityprompts" / "toxic.jsonl")]
    clean = [r["continuation"]["text"] for r in read_jsonl(DATA_DIR / "realtoxicityprompts" / "nontoxic.jsonl")]
    toxic_scores, clean_scores = scorer.score(toxic), scorer.score(clean)
    assert all(0.0 <= s <= 1.0 for s in toxic_scores + clean_scores)
    # Measured: 0.43 against 0.25 on average.
    assert np.mean(toxic_scores) > np.mean(clean_scores) + 0.1


@pytest.fixture(scope="module")
def detoxify_checkpoint(tmp_path_factory):
    """A detoxify checkpoint in detoxify's own format (config + state_dict), of a tiny random BERT, with the
    Hugging Face config and tokenizer folder it needs offline: the real checkpoints cannot be downloaded here."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder = tmp_path_factory.mktemp("detoxify")
    words = "you are a nice kind terrible awful idiot person friend hello world the of".split()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(vocab_size=5 + len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=6, initializer_range=0.5)
    config.save_pretrained(folder)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    classes = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
    checkpoint = folder / "toxic_tiny.ckpt"
    torch.save({"config": {"arch": {"args": {"model_type": str(folder), "model_name": "BertForSequenceClassification",
                                             "tokenizer_name": "BertTokenizer", "num_classes": 6}},
                           "dataset": {"args": {"classes": classes}}},
                "state_dict": model.state_dict()}, checkpoint)
    return checkpoint, folder, model


def test_detoxify_through_its_own_interface(detoxify_checkpoint):
    from transformers import BertTokenizer

    checkpoint, folder, model = detoxify_checkpoint
    scorer = make_scorer("detoxify-original", checkpoint, folder)
    assert isinstance(scorer, Detoxify) and scorer.describe()["checkpoint_sha256"] != ""
    texts = ["you are a nice person", "you are a terrible awful idiot", "hello world", "the friend of the idiot"] * 20
    scores = scorer.score(texts)
    # Detoxify's "toxicity" is the sigmoid of the first logit ("toxic", renamed by detoxify).
    tokenizer = BertTokenizer.from_pretrained(folder)
    with torch.no_grad():
        logits = model(**tokenizer(texts, return_tensors="pt", padding=True)).logits
    expected = torch.sigmoid(logits[:, 0]).tolist()
    assert scores == pytest.approx(expected, abs=1e-6)
    assert len(set(round(s, 6) for s in scores[:4])) == 4


def test_scorer_choice_errors(tmp_path):
    with pytest.raises(UserError, match="unknown toxicity scorer 'perspective'"):
        make_scorer("perspective")
    with pytest.raises(UserError, match="for the detoxify scorers"):
        make_scorer("profanity-check", checkpoint=tmp_path / "x.ckpt")
    with pytest.raises(UserError, match="is not a file"):
        make_scorer("detoxify-unbiased", checkpoint=tmp_path / "missing.ckpt")
