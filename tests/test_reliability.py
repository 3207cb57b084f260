"""Crash safety and reproducibility:

- a run of the real SmolLM2 killed with SIGKILL (at several points) or stopped with Ctrl-C, as a `harness run`
  process, resumes with `--resume`, recomputes nothing the cache holds, and ends with the results of a run never
  interrupted;
- every reader refuses a torn file (results.json, samples.jsonl, results.csv, a baseline, the response cache), torn
  from a tiny model's run (the readers do not care which model wrote it);
- two runs of one command give byte-identical scores, `harness rerun` says so, and --seed moves sampled text.
"""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.engine.cache import ResponseCache
from harness.errors import UserError
from harness.gate.baseline import read_baseline, write_baseline
from harness.record.run_folder import read_run
from tests.tiny import make_tiny_llama_folder

# MMLU questions (loglikelihood, fast) then GSM8K 5-shot generations (about 3 s each here), one response per
# commit: long enough to be killed part-way (Ctrl-C comes after the first generation, with the second 3 s away),
# short enough for the suite.
COMMAND = ["run", "--model", "smollm2-135m", "--tasks", "mmlu_abstract_algebra,gsm8k", "--limit",
           "mmlu_abstract_algebra=5,gsm8k=2"]
TOTAL = 5 * 4 + 2


def start(arguments, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "HARNESS_CACHE_DB": str(cache), "HARNESS_COMMIT_EVERY": "1"}
    # A shell that starts a job in the background makes it (and so this suite) ignore SIGINT, which the child
    # would inherit and Python would honour: give the child the default, as a terminal's Ctrl-C finds it.
    return subprocess.Popen([sys.executable, "-m", "harness", *arguments], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def stored(cache: Path) -> int:
    if not cache.exists():
        return 0
    connection = sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=30)
    try:
        return connection.execute("SELECT count(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not made yet
        return 0
    finally:
        connection.close()


def stop_when(process: subprocess.Popen, ready, how: int) -> None:
    deadline = time.monotonic() + 300
    while not ready():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the run never reached the point to kill it at"
        time.sleep(0.05)
    process.send_signal(how)
    process.wait(timeout=60)


def scores(folder: Path) -> list:
    return [(s["task"], s["doc_id"], s["scores"]) for s in read_run(folder)[1]]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The real model's run of COMMAND, in its own process, never stopped: what the stopped runs must end with."""
    folder = tmp_path_factory.mktemp("whole") / "run"
    process = start([*COMMAND, "--output", str(folder)], folder.parent / "cache.sqlite")
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-2000:]
    return folder


@pytest.mark.slow
# Killed before any response, during the loglikelihoods, and Ctrl-C during the generations (a SIGKILL there
# resumes through the same cache as one during the loglikelihoods, so it is not run again).
@pytest.mark.parametrize("point", ["model loaded", "mmlu half done", "ctrl-c"])
def test_a_killed_run_resumes_to_the_uninterrupted_results(tmp_path, uninterrupted, point):
    cache, folder = tmp_path / "cache.sqlite", tmp_path / "run"
    process = start([*COMMAND, "--output", str(folder)], cache)
    ready = {"model loaded": lambda: (folder / "run.json").exists(),
             "mmlu half done": lambda: stored(cache) >= 10,
             "ctrl-c": lambda: stored(cache) >= 21}[point]
    stop_when(process, ready, signal.SIGINT if point == "ctrl-c" else signal.SIGKILL)
    if point == "ctrl-c":
        assert process.returncode == 130
        assert f"resume with: harness run --resume {folder}" in process.stderr.read()
    else:
        assert process.returncode == -signal.SIGKILL
    kept = stored(cache)
    assert kept < TOTAL and not (folder / "results.json").exists()  # killed part-way: nothing final written
    assert sorted(p.name for p in folder.iterdir()) == ["run.json"]

    resumed = start(["run", "--resume", str(folder)], cache)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-2000:]
    cache_use = read_run(folder)[0]["settings"]["response_cache"]
    # Every response the killed run stored is reused; only the rest reach the model.
    assert sum(cache_use["hits"].values()) == kept
    assert sum(cache_use["computed"].values()) == TOTAL - kept
    assert stored(cache) == TOTAL
    assert scores(folder) == scores(uninterrupted)
    assert read_run(folder)[0]["results"] == read_run(uninterrupted)[0]["results"]
    print(f"\n{point}: {kept} of {TOTAL} responses stored when stopped; the resumed run reused "
          f"{sum(cache_use['hits'].values())} and computed {sum(cache_use['computed'].values())}; results identical")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, smollm2_folder) -> Path:
    """A finished run of a tiny random model, made in seconds: the file readers' tests tear its files, whatever
    model wrote them."""
    tiny = make_tiny_llama_folder(tmp_path_factory.mktemp("tiny"), smollm2_folder)
    folder = tmp_path_factory.mktemp("finished") / "run"
    assert main(["run", "--model", f"hf:{tiny}", "--tasks", "mmlu_abstract_algebra", "--limit", "5", "--output",
                 str(folder)]) == 0
    return folder


def test_resume_refuses_a_finished_run_and_other_flags(finished, capsys):
    assert main(["run", "--resume", str(finished)]) == 2
    assert "is a finished run; nothing to resume" in capsys.readouterr().err
    assert main(["run", "--resume", str(finished), "--limit", "3"]) == 2
    assert "give it alone, not with --limit" in capsys.readouterr().err


def truncations(path: Path, count: int = 6) -> list[int]:
    """Random offsets that cut at least the file's last meaningful byte (a trailing newline alone is not damage)."""
    size = len(path.read_bytes().rstrip(b"\n"))
    return random.Random(path.name).sample(range(size), min(count, size))


def torn_copy(path: Path, offset: int, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    for sibling in path.parent.iterdir():
        if sibling.is_file():
            (into / sibling.name).write_bytes(sibling.read_bytes())
    (into / path.name).write_bytes(path.read_bytes()[:offset])
    return into / path.name


@pytest.mark.parametrize("name", ["results.json", "samples.jsonl", "results.csv"])
def test_every_torn_run_file_is_refused(tmp_path, finished, name):
    read_run(finished)  # whole, it reads
    for offset in truncations(finished / name):
        torn = torn_copy(finished / name, offset, tmp_path / f"{name}-{offset}")
        with pytest.raises(UserError, match="damaged|not a run"):
            read_run(torn.parent)


def test_a_torn_baseline_is_refused(tmp_path, finished):
    baseline = write_baseline(finished, tmp_path / "baseline.json", gate_settings={})
    read_baseline(baseline)
    for offset in truncations(baseline):
        torn = torn_copy(baseline, offset, tmp_path / f"torn-{offset}")
        with pytest.raises(UserError, match="not a baseline|damaged"):
            read_baseline(torn)


def test_a_torn_response_cache_is_refused_or_read_whole(tmp_path):
    path = tmp_path / "whole" / "responses.sqlite"
    cache = ResponseCache(path)
    entries = [(f"{i:064x}", json.dumps([-float(i) / 7, i % 2 == 0])) for i in range(3000)]
    cache.put_many("model", entries)
    cache.close()
    for offset in truncations(path):
        torn = torn_copy(path, offset, tmp_path / f"torn-{offset}")
        try:
            reopened = ResponseCache(torn)
            found = reopened.get_many("model", [key for key, _ in entries])
        except UserError as error:
            assert "response cache" in str(error) and "--no-cache" in str(error)
            continue
        assert found == dict(entries)  # SQLite read it only because nothing it needed was cut


@pytest.mark.slow
def test_runs_reproduce_byte_for_byte_and_the_seed_moves_sampling(tmp_path, capsys, runs_share_smollm2):
    # Sampled generations, the case where reproducing takes the seeds (greedy ones are in the runs above).
    command = ["run", "--model", "smollm2-135m", "--tasks", "realtoxicityprompts_challenging", "--limit", "2",
               "--samples", "2", "--no-cache"]
    assert main([*command, "--output", str(tmp_path / "a")]) == 0
    assert main([*command, "--output", str(tmp_path / "b")]) == 0
    lines = lambda folder: (folder / "samples.jsonl").read_bytes()  # noqa: E731
    assert lines(tmp_path / "a") == lines(tmp_path / "b")  # scores, prompts and responses, byte for byte
    capsys.readouterr()
    assert main(["rerun", str(tmp_path / "a"), "--output", str(tmp_path / "again")]) == 0
    assert "reproduced: all 2 samples score exactly as in" in capsys.readouterr().out
    assert main([*command, "--seed", "7", "--output", str(tmp_path / "c")]) == 0
    texts = lambda folder: [s["response"] for s in read_run(folder)[1] if s["task"].startswith("real")]  # noqa
    assert texts(tmp_path / "c") != texts(tmp_path / "a")


@pytest.mark.slow
def test_the_cache_answers_only_the_same_model_and_prompt_settings(tmp_path, smollm2, runs_share_smollm2):
    """Same command: everything from the cache. Another variant, implementation or prompt setting: nothing."""
    base = ["run", "--tasks", "mmlu_anatomy", "--limit", "3"]

    def cache_use(name: str, *extra: str) -> tuple[int, int]:
        assert main([*base, *extra, "--output", str(tmp_path / name)]) == 0
        use = read_run(tmp_path / name)[0]["settings"]["response_cache"]
        return sum(use["hits"].values()), sum(use["computed"].values())

    assert cache_use("first", "--model", "smollm2-135m") == (0, 12)
    assert cache_use("again", "--model", "smollm2-135m") == (12, 0)
    assert cache_use("int8", "--model", "smollm2-135m:int8") == (0, 12)
    assert cache_use("peer", "--model", f"transformers:{smollm2.folder}") == (0, 12)
    assert cache_use("chat", "--model", "smollm2-135m", "--apply-chat-template") == (0, 12)
    assert cache_use("system", "--model", "smollm2-135m", "--system-prompt", "Answer briefly.") == (0, 12)
    assert cache_use("int8 again", "--model", "smollm2-135m:int8") == (12, 0)
    assert read_run(tmp_path / "again")[1] == read_run(tmp_path / "first")[1]
