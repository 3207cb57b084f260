"""The perturbed variants of a run's tasks (--perturb), each checked to apply before any work, with one line naming
the tasks it does apply to when it does not."""

from __future__ import annotations

import tasks as task_registry
from harness.engine.task import Task, TaskOptions
from harness.errors import UserError
from harness.robustness.perturbations import Perturbation, parse_perturbations
from harness.robustness.perturbed_task import PerturbedTask, make_variant, why_not


def perturbed_variants(built: list[Task], specs: tuple[str, ...], seed: int
                       ) -> list[tuple[Task, PerturbedTask, Perturbation]]:
    """(clean task, its variant, the perturbation) for every perturbation and task, in that order."""
    variants = []
    for perturbation in parse_perturbations(specs):
        for task in built:
            reason = why_not(task, perturbation)
            if reason is not None:
                raise UserError(f"--perturb {perturbation.name} does not apply to {task.name}: {reason}; it applies "
                                f"to {', '.join(applicable(perturbation))}")
            variants.append((task, make_variant(task, perturbation, seed), perturbation))
    return variants


def applicable(perturbation: Perturbation) -> list[str]:
    """The registered tasks the perturbation applies to, a group named where all its tasks are."""
    names = set()
    for name, factory in task_registry.TASKS.items():
        try:
            task = factory(TaskOptions())
        except UserError:  # a task that is not built without an option (humaneval's sandbox) is not listed
            continue
        if why_not(task, perturbation) is None:
            names.add(name)
    shown: list[str] = []
    covered: set[str] = set()
    for group in sorted(task_registry.GROUPS, key=lambda g: -len(task_registry.expand([g]))):
        members = set(task_registry.expand([group]))
        if members <= names and not members <= covered:
            shown.append(group)
            covered |= members
    return sorted(shown) + sorted(names - covered)
