"""Robustness: how much a task's score moves under changes that leave its answers the same (`harness run --perturb`).

perturbations.py says what each perturbation is and changes text deterministically; perturbed_task.py wraps a task
so that it asks its questions perturbed; analysis.py pairs each perturbed variant with the clean task document by
document (docs/robustness.md).
"""
