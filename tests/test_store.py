"""The results store: runs recorded in SQLite, and the newest comparable result found again."""

import json

import pandas as pd

from harness.record.store import ResultsStore


def make_run(folder, created, acc, prompt_hash="aaaa", model="smollm2-135m", n=135):
    folder.mkdir(parents=True)
    record = {"created": created, "harness_version": "0.1.0", "settings": {"limit": None},
              "model": {"spec": model, "fingerprint": "f" * 64},
              "tasks": {"mmlu_anatomy": {"version": "1", "prompt_hash": prompt_hash, "num_fewshot": 0,
                                         "docs_evaluated": 135}},
              "results": {"mmlu_anatomy": {"n": n, "acc": acc, "acc_stderr": 0.04, "acc_ci95": [acc - .1, acc + .1]},
                          "mmlu": {"n": n, "acc": acc, "acc_stderr": 0.04, "acc_ci95": [acc - .1, acc + .1],
                                   "members": ["mmlu_anatomy"]}}}
    (folder / "results.json").write_text(json.dumps(record))
    return folder


def test_latest_comparable_result(tmp_path):
    store = ResultsStore(tmp_path / "db" / "results.sqlite")
    store.record(make_run(tmp_path / "old", "2026-11-01T00:00:00+00:00", 0.30))
    store.record(make_run(tmp_path / "new", "2026-11-20T00:00:00+00:00", 0.35))
    store.record(make_run(tmp_path / "other-prompt", "2026-11-22T00:00:00+00:00", 0.90, prompt_hash="bbbb"))
    store.record(make_run(tmp_path / "other-model", "2026-11-23T00:00:00+00:00", 0.50, model="smollm2-135m:int8"))
    assert store.latest("smollm2-135m", "mmlu_anatomy", "acc")["value"] == 0.90  # newest of any prompt
    same_prompt = store.latest("smollm2-135m", "mmlu_anatomy", "acc", task_version="1", prompt_hash="aaaa",
                               num_fewshot=0)
    assert same_prompt["value"] == 0.35 and same_prompt["stderr"] == 0.04 and same_prompt["n"] == 135
    assert store.latest("smollm2-135m:int8", "mmlu_anatomy", "acc")["value"] == 0.50
    assert store.latest("smollm2-135m", "mmlu_anatomy", "acc", num_fewshot=5) is None
    assert store.latest("smollm2-135m", "mmlu", "acc")["value"] == 0.90  # groups are recorded too


def test_recording_a_run_again_replaces_it(tmp_path):
    store = ResultsStore(tmp_path / "results.sqlite")
    run = make_run(tmp_path / "run", "2026-11-01T00:00:00+00:00", 0.30)
    store.record(run)
    record = json.loads((run / "results.json").read_text())
    record["results"]["mmlu_anatomy"]["acc"] = 0.31
    (run / "results.json").write_text(json.dumps(record))
    store.record(run)
    assert len(store.runs()) == 1 and store.latest("smollm2-135m", "mmlu_anatomy", "acc")["value"] == 0.31
    count = store.connection.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    assert count == 2  # mmlu_anatomy and mmlu, acc each (no row for an interval): the old rows went with the old run


def test_leaderboard_takes_each_columns_newest_identity(tmp_path):
    from reports.leaderboard import leaderboard_frame, render

    store = ResultsStore(tmp_path / "results.sqlite")
    store.record(make_run(tmp_path / "a-old", "2026-11-01T00:00:00+00:00", 0.30))
    store.record(make_run(tmp_path / "b", "2026-11-02T00:00:00+00:00", 0.50, model="smollm2-135m:int8"))
    store.record(make_run(tmp_path / "a-new", "2026-11-03T00:00:00+00:00", 0.35, prompt_hash="bbbb"))
    store.record(make_run(tmp_path / "c", "2026-11-02T12:00:00+00:00", 0.60, model="gemma3-270m", n=20))
    frame = leaderboard_frame(store, "nightly").set_index("model")
    # mmlu_anatomy's newest identity is prompt "bbbb": the int8 run (prompt "aaaa") is not comparable there,
    # but the group row "mmlu" carries no prompt identity and shows both.
    assert frame.loc["smollm2-135m", "mmlu acc"] == 0.35 and frame.loc["smollm2-135m:int8", "mmlu acc"] == 0.50
    assert frame.loc["smollm2-135m", "mmlu acc run"] == str((tmp_path / "a-new").resolve())
    assert pd.isna(frame.loc["gemma3-270m", "mmlu acc"])  # its 20 documents are not the others' 135
    assert frame["wikitext word_perplexity"].isna().all()
    frame.attrs = {"n": {"mmlu acc": 135}}  # set_index and reset_index keep no attrs
    csv, markdown, page = render(frame.reset_index(), "nightly", tmp_path / "boards")
    assert "| model | mmlu acc (n=135) |" in markdown.read_text()
    assert "| smollm2-135m | 0.3500 ± 0.0400 | — | — |" in markdown.read_text()
    assert "<table" in page.read_text() and csv.is_file()
