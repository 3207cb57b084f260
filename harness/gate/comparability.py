"""Whether two runs took the same test, so that their scores can be paired document by document.

Everything that decides a task's numbers apart from the model must be equal. From the task's entry in the run
record: its version, prompt hash (a hash of every rendered request: text, continuations, stop strings, maximum
tokens, sampling settings, and the task's own settings such as its scorer), few-shot count and document ids, the
sha256 of its data files and its task settings (samples, temperature, toxicity scorer...). From the run's
settings: the seed (it draws few-shot examples and sampled generations), the chat template and its system prompt,
and whether few-shot examples were chat turns. The prompt hash already covers most of these; each is still compared
on its own so that the reason names what changed. Systems figures are compared only on the same hardware.
"""

from __future__ import annotations

# Entries of a task's record that describe what happened in the run, not which test it was.
OUTCOMES = {"docs_total", "docs_evaluated", "metrics", "breakdown", "truncated_requests", "generations",
            "empty_generations", "tied_choices"}
# Run settings that change what a model is asked (harness/commands/run.py writes them).
RUN_SETTINGS = ("seed", "chat_template", "chat_template_sha256", "system_prompt", "fewshot_as_multiturn")
# What must be equal for speed and memory to be comparable (keys of results.json environment.hardware).
HARDWARE_IDENTITY = ("cpu_model", "logical_cores", "usable_cores", "torch_threads", "device", "gpus")


def shorten(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def task_difference(baseline: dict, run: dict) -> str | None:
    """Why the two task records are not the same test, or None."""
    for field in sorted((set(baseline) | set(run)) - OUTCOMES):
        if baseline.get(field) != run.get(field):
            return f"{field} differs: {shorten(baseline.get(field))} vs {shorten(run.get(field))}"
    return None


def settings_difference(baseline: dict, run: dict) -> str | None:
    """Why the two runs' prompts or draws differ (results.json "settings"), or None. Records without settings
    (written before they were recorded) are taken at their word."""
    first, second = baseline.get("settings"), run.get("settings")
    if not isinstance(first, dict) or not isinstance(second, dict):
        return None
    for field in RUN_SETTINGS:
        if first.get(field) != second.get(field):
            return f"{field} differs: {shorten(first.get(field))} vs {shorten(second.get(field))}"
    return None


def hardware_difference(baseline: dict, run: dict) -> str | None:
    """Why speed and memory of the two records cannot be compared, or None when they ran on the same hardware.
    Records without a hardware context (written before the profiler existed) are taken at their word."""
    hardware = [record.get("environment", {}).get("hardware") for record in (baseline, run)]
    if not all(isinstance(h, dict) for h in hardware):
        return None
    for key in HARDWARE_IDENTITY:
        if hardware[0].get(key) != hardware[1].get(key):
            return f"other hardware: {key} {hardware[0].get(key)!r} vs {hardware[1].get(key)!r}"
    return None
