"""The task registry: every benchmark file registers its tasks and groups here.

`TASKS` maps a task name to a factory taking `TaskOptions`; `GROUPS` maps a group name to its members (tasks or
other groups). `expand` turns the names a user typed into the list of tasks to run. `GROUP_AGGREGATION` says how a
group's row in the results is made:
  "pooled" (the default)  its tasks' samples pooled, so each task weighs by its size (lm-eval's MMLU groups)
  "macro"                 the plain mean of its tasks' headline scores (the GLUE benchmark's score)
  "none"                  no row: the group only names tasks that measure different things (TruthfulQA)
"""

from __future__ import annotations

from typing import Callable

from harness.errors import UserError
from tasks import glue, gsm8k, humaneval, mmlu, realtoxicityprompts, truthfulqa, wikitext
from tasks.base import Task, TaskOptions

TASKS: dict[str, Callable[[TaskOptions], Task]] = {}
GROUPS: dict[str, list[str]] = {}
for module in (mmlu, glue, gsm8k, truthfulqa, wikitext, humaneval, realtoxicityprompts):
    module.register(TASKS, GROUPS)
GROUP_AGGREGATION = {"glue": "macro", "truthfulqa": "none"}


def build(name: str, options: TaskOptions = TaskOptions()) -> Task:
    return TASKS[name](options)


def expand(names: list[str]) -> list[str]:
    """Task names in the order given, groups replaced by their tasks, each task once."""
    result: list[str] = []
    for name in names:
        if name in GROUPS:
            members = expand(GROUPS[name])
        elif name in TASKS:
            members = [name]
        else:
            grouped = {member for members in GROUPS.values() for member in members}
            top_level = sorted(set(GROUPS) | (set(TASKS) - grouped))
            raise UserError(f"unknown task {name!r}; choose from {', '.join(top_level)} "
                            f"(`harness list tasks` shows all {len(TASKS)} tasks)")
        result.extend(m for m in members if m not in result)
    return result


def groups_covering(task_names: list[str]) -> dict[str, list[str]]:
    """Each group whose tasks all ran, with its tasks: these get an aggregate row in the results."""
    chosen = set(task_names)
    return {group: expand([group]) for group in GROUPS
            if set(expand([group])) <= chosen and GROUP_AGGREGATION.get(group) != "none"}
