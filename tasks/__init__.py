"""The task registry: every benchmark file in this package registers its own tasks and groups.

A module of this package is a benchmark file when it has a function `register(tasks, groups)`; the registry finds
it by itself (so adding a benchmark touches no other file: docs/adding-a-task.md). The module may also define
  GROUP_AGGREGATION  {group: how its row in the results is made}, for its groups that are not "pooled":
      "pooled" (the default)  its tasks' samples pooled, so each task weighs by its size (lm-eval's MMLU groups)
      "macro"                 the plain mean of its tasks' headline scores (the GLUE benchmark's score)
      "none"                  no row: the group only names tasks that measure different things (TruthfulQA)
  LIST_ORDER         where its tasks and groups come in `harness list tasks` and among a run's group rows; files
                     without one come after those with one, by module name.

`TASKS` maps a task name to a factory taking `TaskOptions`; `GROUPS` maps a group name to its members (tasks or
other groups). `expand` turns the names a user typed into the list of tasks to run.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Callable

from harness.engine.task import Task, TaskOptions
from harness.errors import UserError

TASKS: dict[str, Callable[[TaskOptions], Task]] = {}
GROUPS: dict[str, list[str]] = {}
GROUP_AGGREGATION: dict[str, str] = {}


def register_module(module: ModuleType) -> None:
    """Adds one benchmark file's tasks, groups and group aggregations to the registry."""
    module.register(TASKS, GROUPS)
    GROUP_AGGREGATION.update(getattr(module, "GROUP_AGGREGATION", {}))


def benchmark_modules() -> list[ModuleType]:
    """Every module of this package with a `register` function, in LIST_ORDER, then by name."""
    modules = [importlib.import_module(f"{__name__}.{info.name}") for info in pkgutil.iter_modules(__path__)
               if not info.name.startswith("_")]
    found = [module for module in modules if callable(getattr(module, "register", None))]
    return sorted(found, key=lambda module: (getattr(module, "LIST_ORDER", float("inf")), module.__name__))


for _module in benchmark_modules():
    register_module(_module)


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
