"""Bad input, as docs/errors.md lists it: each case ends with one line on stderr that says what is wrong and what
to do, exit code 2, no traceback, and no run folder left behind. (The table's other rows are tested beside the
feature they belong to: tests/test_cli.py, test_variants.py, test_gate_cli.py, test_reliability.py.)"""

import json
import shutil

import pytest

import tasks
from harness.cli import main
from tests.tiny import make_tiny_llama_folder


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, smollm2_folder):
    return make_tiny_llama_folder(tmp_path_factory.mktemp("tiny"), smollm2_folder, max_positions=64)


def refused(capsys, *argv) -> str:
    """Runs `harness ARGV`; checks the error contract and returns the message."""
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("harness: error: ") and len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def run_refused(capsys, tmp_path, *argv) -> str:
    message = refused(capsys, "run", *argv, "--output", str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    return message


def gsm8k_data(tmp_path, monkeypatch, test_lines: list[bytes]):
    (tmp_path / "data" / "gsm8k").mkdir(parents=True)
    (tmp_path / "data" / "gsm8k" / "test.jsonl").write_bytes(b"\n".join(test_lines) + b"\n")
    shutil.copy(tasks.gsm8k.DATA_DIR / "gsm8k" / "train.jsonl", tmp_path / "data" / "gsm8k")
    monkeypatch.setattr(tasks.gsm8k, "DATA_DIR", tmp_path / "data")


GOOD_LINE = json.dumps({"question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4"}).encode()


def test_a_corrupt_data_line_names_the_file_and_line(tmp_path, monkeypatch, capsys):
    gsm8k_data(tmp_path, monkeypatch, [GOOD_LINE, GOOD_LINE[:30]])
    message = run_refused(capsys, tmp_path, "--model", "smollm2-135m", "--tasks", "gsm8k", "--num-fewshot", "0")
    assert "test.jsonl, line 2: not valid JSON" in message


def test_non_utf8_bytes_in_a_text_field_name_the_file_and_line(tmp_path, monkeypatch, capsys):
    latin1 = json.dumps({"question": "caf\u00e9?", "answer": "#### 1"}, ensure_ascii=False).encode("latin-1")
    gsm8k_data(tmp_path, monkeypatch, [GOOD_LINE, GOOD_LINE, latin1])
    message = run_refused(capsys, tmp_path, "--model", "smollm2-135m", "--tasks", "gsm8k", "--num-fewshot", "0")
    assert "test.jsonl, line 3: not UTF-8 text" in message


def test_non_utf8_bytes_in_a_csv_name_the_file_and_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "mmlu" / "test").mkdir(parents=True)
    (tmp_path / "mmlu" / "test" / "anatomy_test.csv").write_bytes(
        b"question,choice0,choice1,choice2,choice3,answer\nQ,a,b,c,d,1\nQ\xe9,a,b,c,d,2\n")
    monkeypatch.setattr(tasks.mmlu, "DATA_DIR", tmp_path)
    message = run_refused(capsys, tmp_path, "--model", "smollm2-135m", "--tasks", "mmlu_anatomy")
    assert "anatomy_test.csv, line 3: not UTF-8 text" in message


def test_a_truncated_safetensors_file_is_refused(tmp_path, tiny_folder, capsys):
    broken = shutil.copytree(tiny_folder, tmp_path / "broken")
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])
    message = run_refused(capsys, tmp_path, "--model", f"hf:{broken}", "--tasks", "wikitext", "--limit", "1")
    assert "cannot read checkpoint" in message and "model.safetensors" in message


def test_a_checkpoint_that_does_not_fit_its_architecture_is_refused(tmp_path, tiny_folder, capsys):
    broken = shutil.copytree(tiny_folder, tmp_path / "broken")
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "intermediate_size": 80}))
    message = run_refused(capsys, tmp_path, "--model", f"hf:{broken}", "--tasks", "wikitext", "--limit", "1")
    assert "does not fit the architecture" in message and "mlp" in message


def test_a_gguf_that_is_not_a_gguf_is_refused(tmp_path, capsys):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 a zip file, not a gguf")
    message = run_refused(capsys, tmp_path, "--model", f"hf:{fake}", "--tasks", "wikitext", "--limit", "1")
    assert "is not a GGUF file" in message
    other = tmp_path / "weights.bin"
    other.write_bytes(b"\0" * 16)
    assert "takes a model folder or a .gguf file" in run_refused(capsys, tmp_path, "--model", f"hf:{other}",
                                                                   "--tasks", "wikitext")


def test_an_output_folder_inside_a_file_or_where_nothing_can_be_written_is_refused(tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    message = refused(capsys, "run", "--model", "smollm2-135m", "--tasks", "wikitext",
                      "--output", str(tmp_path / "a-file" / "run"))
    assert "is a file" in message
    # /sys accepts no new folders, even from root (for whom os.access says yes).
    message = refused(capsys, "run", "--model", "smollm2-135m", "--tasks", "wikitext", "--output", "/sys/harness-run")
    assert "cannot write the run into /sys" in message


def test_a_prompt_longer_than_the_window_is_cut_from_the_left_and_counted(tmp_path, tiny_folder, capsys):
    # The tiny model reads 64 positions; MMLU 5-shot prompts are several hundred tokens.
    assert main(["run", "--model", f"hf:{tiny_folder}", "--tasks", "mmlu_anatomy", "--num-fewshot", "5",
                 "--limit", "2", "--output", str(tmp_path / "run")]) == 0
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["tasks"]["mmlu_anatomy"]["truncated_requests"] == 8  # 2 questions x 4 choices
    assert "8 prompts were longer than the model's window and were cut from the left" in capsys.readouterr().err


def test_conflicting_flags_are_refused(tmp_path, capsys):
    message = run_refused(capsys, tmp_path, "--model", "smollm2-135m", "--tasks", "gsm8k",
                          "--fewshot-as-multiturn", "false")
    assert "--fewshot-as-multiturn applies only with --apply-chat-template" in message
    (tmp_path / "old").mkdir()
    message = refused(capsys, "run", "--resume", str(tmp_path / "old"), "--model", "smollm2-135m")
    assert "give it alone, not with --model" in message
    assert "needs --model and --tasks" in refused(capsys, "run", "--tasks", "gsm8k")


def test_resume_of_a_folder_that_is_no_interrupted_run_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert "is not an interrupted run folder" in refused(capsys, "run", "--resume", str(tmp_path / "empty"))


def test_a_damaged_response_cache_is_refused(tmp_path, tiny_folder, monkeypatch, capsys):
    garbage = tmp_path / "responses.sqlite"
    garbage.write_bytes(b"this is not an SQLite database, it was overwritten" * 100)
    monkeypatch.setenv("HARNESS_CACHE_DB", str(garbage))
    # The cache is opened once the model has loaded: the tiny model, so as not to load the real one for an error.
    message = run_refused(capsys, tmp_path, "--model", f"hf:{tiny_folder}", "--tasks", "wikitext", "--limit", "1")
    assert "cannot use the response cache" in message and "--no-cache" in message


def test_a_report_of_a_folder_that_is_no_run_is_refused(tmp_path, capsys):
    assert "is not a run folder" in refused(capsys, "report", str(tmp_path))


def test_a_data_dir_that_is_not_a_folder_is_refused(tmp_path, capsys):
    message = run_refused(capsys, tmp_path, "--model", "smollm2-135m", "--tasks", "mnli",
                          "--data-dir", str(tmp_path / "nowhere"))
    assert "--data-dir" in message and "is not a folder" in message
