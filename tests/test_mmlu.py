"""MMLU: prompts byte-identical to lm-eval's, the subject categories, and group aggregation by size."""

from pathlib import Path

import pytest

import tasks
from harness.engine.evaluator import aggregate_scores
from harness.engine.task import Metric, TaskOptions
from tasks.mmlu import CATEGORIES, SUBJECTS

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("shots", [0, 5])
def test_prompt_equals_lm_eval_byte_for_byte(shots):
    # Golden files: the context lm-eval 0.4.13 built for doc 0 of abstract_algebra (its --log_samples output
    # on the same data, see docs/fidelity.md).
    expected = (GOLDEN / f"mmlu_abstract_algebra_doc0_{shots}shot.txt").read_text(encoding="utf-8")
    task = tasks.build("mmlu_abstract_algebra", TaskOptions(num_fewshot=shots))
    requests = task.requests(task.docs()[0])
    assert [r.context.text() for r in requests] == [expected] * 4
    assert [r.continuation for r in requests] == [" A", " B", " C", " D"]


def test_57_subjects_in_four_categories_with_all_test_rows():
    assert len(SUBJECTS) == 57 and len(set(SUBJECTS)) == 57
    assert {c: len(s) for c, s in CATEGORIES.items()} == {"stem": 19, "humanities": 13, "social_sciences": 12,
                                                          "other": 13}
    assert sum(len(tasks.build(f"mmlu_{s}").docs()) for s in SUBJECTS) == 14042
    assert len(tasks.expand(["mmlu"])) == 57


def test_few_shot_beyond_the_dev_split_is_refused():
    from harness.errors import UserError

    with pytest.raises(UserError, match="at most 5"):
        tasks.build("mmlu_anatomy", TaskOptions(num_fewshot=6))


def test_groups_weight_subjects_by_size():
    scores = [{"acc": 1.0}] * 3 + [{"acc": 0.0}] * 1  # one subject at 3/3, another at 0/1
    group = aggregate_scores(scores, [Metric("acc")], seed=0)
    assert group["acc"] == 0.75 and group["n"] == 4  # not (1.0 + 0.0) / 2
    covering = tasks.groups_covering(tasks.expand(["mmlu_stem", "mmlu_other"]))
    assert set(covering) == {"mmlu_stem", "mmlu_other"}
