"""The task registry: every benchmark file registers its tasks and groups here.

`TASKS` maps a task name to a factory taking `num_fewshot`; `GROUPS` maps a group name to its members (tasks or
other groups). `expand` turns the names a user typed into the list of tasks to run.
"""

from __future__ import annotations

from typing import Callable

from harness.errors import UserError
from tasks import mmlu, wikitext
from tasks.base import Task

TASKS: dict[str, Callable[[int], Task]] = {}
GROUPS: dict[str, list[str]] = {}
for module in (mmlu, wikitext):
    module.register(TASKS, GROUPS)


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
    return {group: expand([group]) for group in GROUPS if set(expand([group])) <= chosen}
