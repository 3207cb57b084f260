"""--limit N, per task or group (NAME=N): what the nightly suite uses to size each task by its power analysis."""

import argparse

import pytest

from harness.cli.argtypes import limit_spec
from harness.commands.run import per_task_limits
from harness.errors import UserError
from tasks import expand


def test_limit_spec_reads_a_default_and_named_limits():
    assert limit_spec("10") == (10, ())
    assert limit_spec("mmlu_stem=70, wikitext=5") == (None, ("mmlu_stem=70", "wikitext=5"))
    assert limit_spec("10,gsm8k=3") == (10, ("gsm8k=3",))
    for bad in ("0", "ten", "=3", "gsm8k=0", "10,20", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            limit_spec(bad)


def test_a_group_limit_applies_to_each_of_its_tasks_and_a_stray_name_is_refused():
    names = ["mmlu_abstract_algebra", "mmlu_anatomy", "wikitext"]
    assert per_task_limits(("mmlu_anatomy=7", "wikitext=2"), names) == {"mmlu_anatomy": 7, "wikitext": 2}
    stem = expand(["mmlu_stem"])
    limits = per_task_limits(("mmlu_stem=70",), stem + ["wikitext"])
    assert set(limits) == set(stem) and set(limits.values()) == {70}
    with pytest.raises(UserError, match="not among --tasks"):
        per_task_limits(("gsm8k=3",), names)
