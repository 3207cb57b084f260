"""`harness run --perturb` as a user runs it, on the real model: the variants beside the clean task, paired in the
record and printed; the clean order's answers reused; perturbed prompts the same under one seed; bad input in one
line."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.cli import main
from harness.record.run_folder import read_run

BASE = ["run", "--model", "smollm2-135m", "--tasks", "mmlu_anatomy", "--limit", "4"]


def exit_code(arguments):
    try:
        return main(arguments)
    except SystemExit as exited:  # argparse's refusal of a flag's value
        return exited.code


def prompts(folder, task):
    return {s["doc_id"]: s["prompt"] for s in read_run(folder)[1] if s["task"] == task}


@pytest.mark.slow  # three runs of the real model
def test_a_perturbed_run_pairs_each_variant_with_the_clean_task(tmp_path, capsys, monkeypatch, runs_share_smollm2):
    monkeypatch.setenv("COLUMNS", "200")  # the tables' titles on one line each
    folder = tmp_path / "run"
    assert main([*BASE, "--perturb", "choices=permute,typos=0.2", "--output", str(folder)]) == 0
    printed = capsys.readouterr().out
    assert "robustness: clean against perturbed" in printed and "by order of the choices" in printed
    record, samples = read_run(folder)
    rows = {row["perturbation"]: row for row in record["robustness"]}
    assert set(rows) == {"choices=permute", "typos=0.2", "worst of 2"}
    by_task = {}
    for sample in samples:
        by_task.setdefault(sample["task"], {})[sample["doc_id"]] = sample
    clean, permuted = by_task["mmlu_anatomy"], by_task["mmlu_anatomy~choices=permute"]
    assert set(clean) == set(permuted) == set(by_task["mmlu_anatomy~typos=0.2"]) == {"0", "1", "2", "3"}
    # The clean order is the clean task's own requests: its answers are the clean ones, reused from the cache.
    for doc in clean:
        assert permuted[doc]["response"][:4] == clean[doc]["response"]
        assert permuted[doc]["scores"]["acc_order_0"] == clean[doc]["scores"]["acc"]
        assert permuted[doc]["target"] == clean[doc]["target"]
    assert sum(record["settings"]["response_cache"]["hits"].values()) == 4 * 4
    row = rows["choices=permute"]
    assert row["clean"]["value"] == record["results"]["mmlu_anatomy"]["acc"]
    assert row["perturbed"]["value"] == record["results"]["mmlu_anatomy~choices=permute"]["acc"]
    assert row["difference"]["value"] == pytest.approx(row["perturbed"]["value"] - row["clean"]["value"])
    assert [o["order"] for o in row["orders"]] == [0, 1, 2, 3]
    # The worst case: right in the clean prompt, under the typos and under every order.
    every = [min(clean[d]["scores"]["acc"], by_task["mmlu_anatomy~typos=0.2"][d]["scores"]["acc"],
                 permuted[d]["scores"]["acc_every_order"]) for d in sorted(clean)]
    assert rows["worst of 2"]["perturbed"]["value"] == sum(every) / 4
    assert {letter["letter"] for letter in row["position_bias"]["letters"]} == set("ABCD")
    assert record["tasks"]["mmlu_anatomy~typos=0.2"]["perturbation"] == "typos=0.2"
    assert "breakdown" not in record["tasks"]["mmlu_anatomy~typos=0.2"]  # the MMLU table keeps the clean row only

    # Reproducible: the same seed writes the same typos (and finds every answer cached); another seed others.
    again, other = tmp_path / "again", tmp_path / "other"
    assert main([*BASE, "--perturb", "typos=0.2", "--output", str(again)]) == 0
    assert main([*BASE, "--perturb", "typos=0.2", "--seed", "7", "--output", str(other)]) == 0
    perturbed = prompts(folder, "mmlu_anatomy~typos=0.2")
    assert prompts(again, "mmlu_anatomy~typos=0.2") == perturbed
    assert prompts(other, "mmlu_anatomy~typos=0.2") != perturbed
    assert perturbed != prompts(folder, "mmlu_anatomy")
    hits = json.loads((again / "results.json").read_text())["settings"]["response_cache"]["hits"]
    assert sum(hits.values()) == 2 * 4 * 4

    # The report shows clean against perturbed side by side, as tables and as a chart.
    assert main(["report", str(folder), "--output", str(tmp_path / "report")]) == 0
    table = pd.read_csv(tmp_path / "report" / "robustness.csv")
    assert list(table["perturbation"]) == ["choices=permute", "typos=0.2", "worst of 2"]
    assert list(table["clean"]) == [row["clean"]["value"] for row in record["robustness"]]
    assert len(pd.read_csv(tmp_path / "report" / "robustness_letters.csv")) == 4
    html = (tmp_path / "report" / "report.html").read_text()
    section = html[html.index('id="robustness"'):html.index('id="robustness_orders"')]
    assert "<svg" in section and "clean and perturbed" in section


@pytest.mark.parametrize("flags, said", [
    (["--perturb", "shuffle=all"], "unknown perturbation 'shuffle'; choose from choices=permute"),
    (["--perturb", "typos=1.5"], "above 0 and at most 1"),
    (["--perturb", "case=title"], "case takes lower or upper"),
    (["--tasks", "truthfulqa_mc1", "--perturb", "choices=permute"],
     "choices=permute does not apply to truthfulqa_mc1"),
    (["--tasks", "gsm8k", "--perturb", "format=variants"], "format=variants does not apply to gsm8k"),
])
def test_bad_perturbations_are_one_line_with_exit_code_2(tmp_path, capsys, flags, said):
    code = exit_code([*BASE, *flags, "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and said in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
