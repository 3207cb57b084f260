"""`harness list tasks|models`."""

from __future__ import annotations

import tasks as task_registry
from harness.models.registry import list_models


def list_tasks() -> int:
    for group in task_registry.GROUPS:
        print(f"{group:45} group of {len(task_registry.expand([group]))} tasks")
    for name in task_registry.TASKS:
        print(name)
    return 0


def list_model_specs() -> int:
    for name, description in list_models():
        print(f"{name:24} {description}")
    return 0
