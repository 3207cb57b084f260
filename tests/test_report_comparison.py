"""`harness report A B` opens with the paired comparison of B against A (harness/gate/compare.py's rows): headline
rows first, in comparison.csv, at the top of report.md and report.html, with the verdict marked. Built from run
folders written by hand (the shape tests/test_gate_cli.py writes), so no model runs."""

import json

import pandas as pd

from harness.cli import main
from reports import comparison

MMLU = {"mmlu_anatomy": "anatomy", "mmlu_astronomy": "astronomy"}


def identity(task: str, version: str) -> dict:
    entry = {"version": version, "prompt_hash": "abcd", "num_fewshot": 0,
             "metrics": {"acc": {"aggregation": "mean", "higher_is_better": True}}}
    if task in MMLU:  # what the MMLU tasks declare, so that the report has its per-subject table
        entry["breakdown"] = {"table": "mmlu", "title": "MMLU by subject and category", "metrics": ["acc"],
                              "columns": {"category": "stem", "subject": MMLU[task]}}
    return entry


def write_run(folder, correct: dict[str, list[bool]], version="1", samples=True):
    """A run of MMLU anatomy and astronomy (pooled into "mmlu", listed before it as a run records them) and
    arc_easy, scored right or wrong per document."""
    folder.mkdir(parents=True)
    results = {task: {"n": len(c), "acc": sum(c) / len(c)} for task, c in correct.items()}
    pooled = [c for task in MMLU for c in correct[task]]
    results = {**{task: results[task] for task in MMLU},
               "mmlu": {"n": len(pooled), "acc": sum(pooled) / len(pooled), "members": list(MMLU),
                        "aggregation": "pooled"},
               "arc_easy": results["arc_easy"]}
    record = {"created": "2026-11-23T00:00:00+00:00", "model": {"spec": "smollm2-135m", "fingerprint": "f" * 64},
              "tasks": {task: identity(task, version) for task in correct}, "results": results,
              "systems": {"tasks": {}, "run": {"prefill": {"tokens_per_s": 500.0}, "decode": {"tokens_per_s": 50.0}},
                          "memory": {"peak_rss_bytes": 1 << 30}}}  # a real run also has "tasks"; the report needs it
    (folder / "results.json").write_text(json.dumps(record))
    (folder / "samples.jsonl").write_text("".join(
        json.dumps({"task": task, "doc_id": str(i), "scores": {"acc": float(c)}}) + "\n"
        for task, scores in correct.items() for i, c in enumerate(scores)) if samples else "")
    return folder


def scores(lost: int = 0) -> dict[str, list[bool]]:
    """150 of arc_easy's 200 documents right, less the first `lost` of them; MMLU the same every time."""
    arc = [i % 4 != 0 for i in range(200)]
    right = [i for i, c in enumerate(arc) if c]
    for i in right[:lost]:
        arc[i] = False
    return {"mmlu_anatomy": [i % 2 == 0 for i in range(100)], "mmlu_astronomy": [i % 3 == 0 for i in range(100)],
            "arc_easy": arc}


def report(tmp_path, *runs):
    output = tmp_path / "report"
    assert main(["report", *map(str, runs), "--format", "csv,md,html", "--output", str(output)]) == 0
    return output


def test_a_lost_task_opens_the_report_as_regressed(tmp_path):
    output = report(tmp_path, write_run(tmp_path / "a", scores()), write_run(tmp_path / "b", scores(lost=40)))

    comparison = pd.read_csv(output / "comparison.csv")
    assert list(zip(comparison.task, comparison.role)) == [  # the headline (primary) rows first
        ("mmlu", "primary"), ("arc_easy", "primary"), ("mmlu_anatomy", "secondary"), ("mmlu_astronomy", "secondary")]
    assert set(comparison.reference) == {"smollm2-135m (a)"} and set(comparison.run) == {"smollm2-135m (b)"}
    arc = comparison.set_index("task").loc["arc_easy"]
    assert arc.verdict == "regressed" and arc["reference value"] == 0.75 and arc["run value"] == 0.55
    assert arc.difference == -0.2 and arc.ci95_low < -0.2 < arc.ci95_high < 0 and arc.p_adjusted < 0.05
    assert set(comparison.verdict[comparison.task != "arc_easy"]) == {"pass"}
    assert not (output / "side_by_side.csv").read_text().startswith("task")  # the runs side by side, renamed

    markdown = (output / "report.md").read_text()
    first = markdown.index("## Compared with smollm2-135m (a)")
    assert first < markdown.index("## Runs side by side") < markdown.index("## Quality")
    assert markdown.index("## Quality") < markdown.index("## MMLU by subject and category")
    arc_line = next(line for line in markdown.splitlines() if "| arc_easy " in line and "regressed" in line)
    assert "-0.2 [" in arc_line and "| 0.75 " in arc_line and "| 0.55 " in arc_line

    page = (output / "report.html").read_text()
    assert '<td class="regressed">regressed</td>' in page
    assert page.index('id="comparison"') < page.index('id="quality"') < page.index('id="mmlu"')


def test_a_single_run_has_no_comparison(tmp_path):
    output = report(tmp_path, write_run(tmp_path / "a", scores()))
    assert not (output / "comparison.csv").exists() and not (output / "side_by_side.csv").exists()
    assert "Compared with" not in (output / "report.md").read_text()
    assert 'id="comparison"' not in (output / "report.html").read_text()


def test_runs_that_took_another_test_still_report_why(tmp_path):
    output = report(tmp_path, write_run(tmp_path / "a", scores()), write_run(tmp_path / "b", scores(), version="2"))
    comparison = pd.read_csv(output / "comparison.csv")
    assert len(comparison) == 4 and set(comparison.verdict) == {"not comparable"}
    assert all(reason.startswith("version differs") for reason in comparison.reason)
    assert "version differs" in (output / "report.md").read_text()
    assert '<td class="attention">not comparable</td>' in (output / "report.html").read_text()


def test_runs_that_cannot_be_paired_still_report_why(tmp_path):
    output = report(tmp_path, write_run(tmp_path / "a", scores()), write_run(tmp_path / "b", scores(), samples=False))
    comparison = pd.read_csv(output / "comparison.csv")
    assert list(comparison.verdict) == ["not comparable"]
    assert "no per-sample scores" in comparison.reason[0]
    assert (output / "quality.csv").exists()


def test_numbers_read_as_people_read_them():
    row = {"task": "gsm8k", "metric": "exact_match", "role": "primary", "n": 5, "baseline": 0.123456, "run": 0.2,
           "difference": 0.0123, "interval": [-0.01, 0.03], "correlation": None, "p_adjusted": 0.51234,
           "mde": float("inf"), "verdict": "pass", "reason": None}
    shown = comparison.shown_frame(comparison.comparison_frame([("a", "b", [row])])).iloc[0]
    assert shown["difference [95 % CI]"] == "+0.0123 [-0.01, 0.03]"
    assert (shown["reference value"], shown["p adjusted"], shown["MDE"], shown["correlation"]) == (
        "0.1235", "0.5123", "none", "—")


def test_a_speculative_run_beside_a_plain_one_shows_its_decoding_and_speed_against_it(tmp_path):
    """How each run decoded, its decode speed and p95 latency as ratios to the first run's, and a speculative
    run's acceptance in the systems table."""
    plain = write_run(tmp_path / "plain", scores())
    speculative = write_run(tmp_path / "speculative", scores())
    record = json.loads((speculative / "results.json").read_text())
    record["model"]["decoding"] = {"kv_cache": True, "speculative": "ngram=3,k=4"}
    record["systems"]["run"]["decode"]["tokens_per_s"] = 75.0
    record["systems"]["run"]["speculation"] = {"acceptance_rate": 0.4, "tokens_per_row_step": 2.6,
                                               "draft_share": 0.01}
    (speculative / "results.json").write_text(json.dumps(record))
    output = report(tmp_path, plain, speculative)
    side = pd.read_csv(output / "side_by_side.csv")
    assert list(side["decoding"]) == ["kv cache", "speculative ngram=3,k=4"]
    assert list(side["decode tok/s vs first"]) == [1.0, 1.5]
    systems = pd.read_csv(output / "systems.csv")
    assert list(systems["drafts accepted %"].dropna()) == [40.0]
    assert list(systems["tokens a target step"].dropna()) == [2.6]
