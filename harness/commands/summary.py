"""What `harness run` prints when it ends: the results and systems tables, then what the user should know about how
the numbers were made (cached responses, the toxicity scorer, empty generations, prompts cut to fit)."""

from __future__ import annotations

import sys

from reports.robustness import print_robustness
from reports.systems import print_systems
from reports.tables import print_results


def print_summary(record: dict, task_records: dict[str, dict], cache: dict | None) -> None:
    settings = record["settings"]
    chat = "chat template" if settings["chat_template"] else "no chat template"
    robustness = record.get("robustness") or []
    variants = {variant for row in robustness for variant in row["variants"]}  # shown in the robustness tables
    print_results({name: values for name, values in record["results"].items() if name not in variants},
                  title=f"{record['model']['spec']}, {chat} ({record['wall_seconds']:.0f} s)")
    if robustness:
        print_robustness(robustness)
    hardware = record["environment"]["hardware"]
    where = f"{settings['device']}, {settings['dtype']}"
    print_systems(record["systems"], f"{hardware['cpu_model']}, {where}"
                  if isinstance(hardware.get("cpu_model"), str) else where)
    if cache and sum(cache["hits"].values()):  # cached responses cost nothing: the systems figures leave them out
        hits, computed = sum(cache["hits"].values()), sum(cache["computed"].values())
        print(f"response cache: {hits} responses reused, {computed} computed (the systems figures cover only "
              "those computed; --no-cache measures everything)", file=sys.stderr)
    scorers = {r["toxicity_scorer"]["package"] for r in task_records.values() if r.get("toxicity_scorer")}
    for scorer in scorers:  # toxicity from different scorers is not comparable: say which one this is
        print(f"toxicity scored by {scorer}", file=sys.stderr)
    for name, task_record in task_records.items():
        empty, total = task_record.get("empty_generations", 0), task_record.get("generations", 0)
        if empty:
            advice = "; an instruction-tuned model may need --apply-chat-template" if not settings["chat_template"] \
                else ""
            print(f"warning: {name}: {empty} of {total} generations are empty{advice}", file=sys.stderr)
        if task_record.get("truncated_requests"):
            print(f"note: {name}: {task_record['truncated_requests']} prompts were longer than the model's window "
                  "and were cut from the left, as lm-eval does", file=sys.stderr)
