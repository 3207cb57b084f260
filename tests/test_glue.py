"""GLUE: prompts as lm-eval writes them, the metrics on hand-worked cases, STS-B's expected rating, the GLUE
score, and MNLI/QQP loading from a local copy in the Hub's parquet layout."""

from pathlib import Path

import pandas as pd
import pytest

import tasks
from harness.engine.evaluator import aggregate_scores
from harness.engine.requests import LoglikelihoodResult
from harness.engine.task import TaskOptions
from harness.errors import UserError
from harness.stats import f1, macro_average, mcc, pearson, spearman

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("name", ["sst2", "rte"])
def test_prompt_equals_lm_eval_byte_for_byte(name):
    # The context lm-eval 0.4.13 built for doc 0 on the same data (--log_samples; docs/fidelity.md).
    expected = (GOLDEN / f"{name}_doc0.txt").read_text(encoding="utf-8")
    task = tasks.build(name)
    requests = task.requests(task.docs()[0])
    assert {r.context.text() for r in requests} == {expected}


@pytest.mark.parametrize("name, doc, prompt, continuations", [
    ("cola", {"sentence": "S."}, "S.\nQuestion: Does this sentence make sense?\nAnswer:", [" no", " yes"]),
    ("sst2", {"sentence": "S ."}, "S .\nQuestion: Is this sentence positive or negative?\nAnswer:",
     [" negative", " positive"]),
    ("mrpc", {"sentence1": "A.", "sentence2": "B."},
     "Sentence 1: A.\nSentence 2: B.\nQuestion: Do both sentences mean the same thing?\nAnswer:", [" no", " yes"]),
    ("qnli", {"question": "Q?", "sentence": "A."},
     "Q?\nA.\nQuestion: Does this response answer the question?\nAnswer:", [" yes", " no"]),
    ("rte", {"sentence1": "A.", "sentence2": "B."}, "A.\nQuestion: B. True or False?\nAnswer:", [" True", " False"]),
    ("wnli", {"sentence1": "A.", "sentence2": "B."}, "A.\nQuestion: B. True or False?\nAnswer:", [" False", " True"]),
    # lm-eval's mnli doc_to_text strips the hypothesis and ends it with a full stop.
    ("mnli", {"premise": "P.", "hypothesis": " H "}, "P.\nQuestion: H. True, False or Neither?\nAnswer:",
     [" True", " Neither", " False"]),
    ("stsb", {"sentence1": "A.", "sentence2": "B."},  # ours: STS-B is not in lm-eval
     "Sentence 1: A.\nSentence 2: B.\nQuestion: On a scale from 0 to 5, how similar in meaning are these two "
     "sentences?\nAnswer:", [" 0", " 1", " 2", " 3", " 4", " 5"]),
    ("qqp", {"question1": "A?", "question2": "B?"},
     "Question 1: A?\nQuestion 2: B?\nQuestion: Do both questions ask the same thing?\nAnswer:", [" no", " yes"]),
])
def test_prompts_and_choices_of_every_task(name, doc, prompt, continuations):
    from harness.engine.task import Doc

    requests = tasks.build(name).requests(Doc("0", doc))
    assert [r.context.text() for r in requests] == [prompt] * len(continuations)
    assert [r.continuation for r in requests] == continuations


def test_shipped_splits_have_their_published_sizes():
    sizes = {name: len(tasks.build(name).docs()) for name in tasks.expand(["glue"])}
    assert sizes == {"cola": 1043, "sst2": 872, "mrpc": 408, "qnli": 5463, "rte": 277, "wnli": 71, "stsb": 1500}


def test_mcc_and_f1_on_a_hand_worked_case():
    # gold 1 1 0 0 1, predicted 1 0 0 1 1: TP 2, TN 1, FP 1, FN 1.
    pairs = [(1, 1), (1, 0), (0, 0), (0, 1), (1, 1)]
    assert mcc(pairs) == pytest.approx((2 * 1 - 1 * 1) / (3 * 3 * 2 * 2) ** 0.5)  # 1/6
    assert f1(pairs) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # 2/3
    assert mcc([(0, 1), (1, 0)]) == pytest.approx(-1.0)


def test_pearson_and_spearman_on_a_hand_worked_case():
    pairs = [(1, 2), (2, 4), (3, 6), (4, 9)]  # (predicted, gold)
    # deviations (-1.5, -0.5, 0.5, 1.5) and (-3.25, -1.25, 0.75, 3.75): r = 11.5 / sqrt(5 * 26.75)
    assert pearson(pairs) == pytest.approx(11.5 / (5 * 26.75) ** 0.5)
    assert spearman(pairs) == pytest.approx(1.0)  # monotonic but not linear
    # ranks (1, 2, 3) against (2, 1, 3): 1 - 6 * (1 + 1 + 0) / (3 * 8)
    assert spearman([(1, 5), (2, 4), (3, 6)]) == pytest.approx(0.5)


def test_stsb_predicts_the_probability_weighted_rating():
    task = tasks.build("stsb")
    doc = task.docs()[0]
    assert [r.continuation for r in task.requests(doc)] == [" 0", " 1", " 2", " 3", " 4", " 5"]
    # Ratings 2 and 4 equally likely, the rest impossible: the expected rating is 3.
    logprobs = [-1e9, -1e9, -0.5, -1e9, -0.5, -1e9]
    scores = task.score(doc, [LoglikelihoodResult(lp, False) for lp in logprobs])
    assert scores["pearson"] == pytest.approx((3.0, doc.fields["label"]))


def test_glue_score_is_the_mean_of_task_scores():
    mrpc, cola = tasks.build("mrpc"), tasks.build("cola")
    mrpc_result = aggregate_scores([{"acc": 1.0, "f1": (1, 1)}, {"acc": 0.0, "f1": (1, 0)}], mrpc.metrics, seed=0)
    assert mrpc_result["acc"] == 0.5 and mrpc_result["f1"] == pytest.approx(2 / 3)
    assert mrpc.headline(mrpc_result)[0] == pytest.approx((0.5 + 2 / 3) / 2)  # GLUE: MRPC is mean(acc, F1)
    assert cola.headline({"mcc": 0.25, "mcc_stderr": 0.1}) == (0.25, 0.1)
    assert tasks.GROUP_AGGREGATION["glue"] == "macro"
    # Independent tasks: stderr of the mean is sqrt(0.3^2 + 0.4^2) / 2.
    assert macro_average([0.5, 0.7], [0.3, 0.4]) == pytest.approx((0.6, 0.25))
    assert macro_average([0.5, 0.7], [0.3, None])[1] is None


def write_hub_parquet(root: Path, config: str, split: str, frame: pd.DataFrame) -> Path:
    """A local copy in the layout of the Hub's nyu-mll/glue repository: CONFIG/SPLIT-00000-of-00001.parquet."""
    folder = root / config
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}-00000-of-00001.parquet"
    frame.to_parquet(path, index=False)
    return path


def test_mnli_and_qqp_load_a_local_copy_in_the_hub_layout(tmp_path):
    # The real schema of nyu-mll/glue: mnli (premise, hypothesis, label 0 entailment / 1 neutral /
    # 2 contradiction, idx), qqp (question1, question2, label 0 not_duplicate / 1 duplicate, idx).
    mnli = pd.DataFrame({"premise": ["The cat sat on the mat.", "It rained."],
                         "hypothesis": ["A cat sat", "The ground is dry."], "label": [0, 2], "idx": [0, 1]})
    write_hub_parquet(tmp_path, "mnli", "validation_matched", mnli)
    write_hub_parquet(tmp_path, "mnli", "validation_mismatched", mnli.iloc[:1])
    write_hub_parquet(tmp_path, "qqp", "validation", pd.DataFrame(
        {"question1": ["How old is the sun?"], "question2": ["What is the age of the sun?"], "label": [1], "idx": [0]}))
    options = TaskOptions(data_dir=tmp_path)

    task = tasks.build("mnli", options)
    docs = task.docs()
    assert [d.fields["hypothesis"] for d in docs] == ["A cat sat", "The ground is dry."]
    assert task.requests(docs[0])[0].context.text() == (
        "The cat sat on the mat.\nQuestion: A cat sat. True, False or Neither?\nAnswer:")
    assert [task.target(d) for d in docs] == ["True", "False"]
    assert [p.name for p in task.data_files()] == ["validation_matched-00000-of-00001.parquet"]
    assert len(tasks.build("mnli_mismatch", options).docs()) == 1
    qqp = tasks.build("qqp", options)
    assert qqp.target(qqp.docs()[0]) == "yes" and [m.name for m in qqp.metrics] == ["acc", "f1"]


def test_unshipped_data_without_a_copy_says_how_to_give_one(tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"qqp: .*--data-dir .* no qqp/validation-\*\.parquet"):
        tasks.build("qqp", TaskOptions(data_dir=tmp_path)).docs()
    # Offline (as on these machines), the Hub path fails with a message that says what to do.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("datasets.config.HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match=r"mnli: its data is not shipped .* --data-dir DIR"):
        tasks.build("mnli").docs()


def test_glue_takes_no_few_shot_examples():
    with pytest.raises(UserError, match="train split, which is not shipped"):
        tasks.build("sst2", TaskOptions(num_fewshot=1))


def test_only_groups_with_a_meaningful_aggregate_get_a_row():
    covering = tasks.groups_covering(tasks.expand(["glue", "truthfulqa"]))
    assert set(covering) == {"glue"}  # truthfulqa names three different measures: no aggregate row
