"""Numbers that cannot go stale or be silently wrong (issue 22): the response cache misses whenever the weights,
the tokenizer, the config or the answering code change; a NaN log-probability stops the run; ties are counted; a
continuation longer than the window is refused; BOS follows lm-eval's rule."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import harness.models.adapter
from harness.cli import main
from harness.engine.evaluator import tied_choices
from harness.engine.requests import LoglikelihoodRequest, LoglikelihoodResult, RollingLoglikelihoodRequest
from harness.errors import UserError
from harness.models.lm_eval_tokens import rolling_windows
from harness.models.registry import load_model
from harness.record.run_folder import read_run
from tests.tiny import make_tiny_gemma3_folder, make_tiny_llama_folder


@pytest.fixture(params=["llama", "gemma3"])
def tiny(request, tmp_path, monkeypatch):
    """A tiny random model folder of each family with its real tokenizer (SmolLM2's adds no BOS, Gemma's does), and
    a response cache of the test's own."""
    monkeypatch.setenv("HARNESS_CACHE_DB", str(tmp_path / "cache.sqlite"))
    if request.param == "llama":
        return make_tiny_llama_folder(tmp_path / "tiny", request.getfixturevalue("smollm2_folder"))
    return make_tiny_gemma3_folder(tmp_path / "tiny", request.getfixturevalue("gemma3_folder"))


def cache_use(folder, output, *flags) -> tuple[int, int]:
    """(reused, computed) responses of `harness run` on MMLU anatomy (3 questions, 12 requests)."""
    assert main(["run", "--model", f"hf:{folder}", "--tasks", "mmlu_anatomy", "--limit", "3",
                 "--output", str(output), *flags]) == 0
    use = read_run(output)[0]["settings"]["response_cache"]
    return sum(use["hits"].values()), sum(use["computed"].values())


def test_the_cache_misses_when_tokenizer_config_weights_or_code_change(tiny, tmp_path, monkeypatch):
    assert cache_use(tiny, tmp_path / "first") == (0, 12)
    assert cache_use(tiny, tmp_path / "again") == (12, 0)

    config = json.loads((tiny / "tokenizer_config.json").read_text())
    (tiny / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 64}))
    assert cache_use(tiny, tmp_path / "tokenizer") == (0, 12)

    config = json.loads((tiny / "config.json").read_text())
    (tiny / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}))
    assert cache_use(tiny, tmp_path / "config") == (0, 12)

    # A shorter window (--max-length) is another model: its rolling windows and truncation differ.
    assert cache_use(tiny, tmp_path / "window", "--max-length", "48") == (0, 12)
    assert cache_use(tiny, tmp_path / "window-again", "--max-length", "48") == (12, 0)

    # Weights rewritten in place (same size): the recorded hash no longer matches the files' size and mtime.
    weights = tiny / "model.safetensors"
    state = load_file(weights)
    state["model.layers.0.mlp.down_proj.weight"] = state["model.layers.0.mlp.down_proj.weight"] * 0.5
    save_file(state, weights, metadata={"format": "pt"})
    assert cache_use(tiny, tmp_path / "weights") == (0, 12)

    # A copy of the folder is the same model: same answers.
    shutil.copytree(tiny, tmp_path / "copy")
    assert cache_use(tmp_path / "copy", tmp_path / "copied") == (12, 0)

    # The code that computes answers, changed (here: as if it had been): nothing old is reused.
    monkeypatch.setattr(harness.models.adapter, "ANSWER_CODE", "another version of the scoring code")
    assert cache_use(tiny, tmp_path / "code") == (0, 12)


def test_a_nan_log_probability_stops_the_run_and_nothing_is_cached(tiny, tmp_path, capsys):
    state = load_file(tiny / "model.safetensors")
    state["model.layers.1.mlp.down_proj.weight"][:] = float("nan")
    save_file(state, tiny / "model.safetensors", metadata={"format": "pt"})
    output = tmp_path / "run"
    code = main(["run", "--model", f"hf:{tiny}", "--tasks", "mmlu_anatomy", "--limit", "2", "--output", str(output)])
    error = capsys.readouterr().err
    lines = [line for line in error.splitlines() if "harness: error" in line]  # the rest is progress bars
    assert code == 2 and len(lines) == 1 and "Traceback" not in error, error
    assert "mmlu_anatomy, document 0: the model gave a log-probability of nan" in error
    assert not (output / "results.json").exists()
    code = main(["run", "--model", f"hf:{tiny}", "--tasks", "mmlu_anatomy", "--limit", "2",
                 "--output", str(tmp_path / "again")])
    assert code == 2 and "log-probability of nan" in capsys.readouterr().err  # not answered from a cache


def test_exact_ties_at_the_top_are_counted():
    results = [LoglikelihoodResult(-1.5, False), LoglikelihoodResult(-0.5, True), LoglikelihoodResult(-0.5, False)]
    assert tied_choices(results)
    assert not tied_choices(results[:2]) and not tied_choices([results[1]])
    assert not tied_choices([LoglikelihoodResult(-0.5, True), LoglikelihoodResult(-0.5000001, False)])


def test_a_continuation_longer_than_the_window_is_refused(tmp_path, smollm2_folder):
    folder = make_tiny_llama_folder(tmp_path / "tiny", smollm2_folder, max_positions=64)
    model = load_model(f"hf:{folder}")
    with pytest.raises(UserError, match="longer than .* window of 64 tokens"):
        model.loglikelihood([LoglikelihoodRequest("Question:", " word" * 80)])
    # One that fits, with its context cut from the left, is scored.
    (result,) = model.loglikelihood([LoglikelihoodRequest("Question:" * 40, " word" * 30)])
    assert torch.isfinite(torch.tensor(result.logprob))


@pytest.mark.slow
def test_bos_follows_lm_eval_for_a_tokenizer_that_adds_one():
    """Gemma's tokenizer adds BOS (id 2). As lm-eval 0.4.13: a context keeps the tokenizer's BOS; an empty context
    is the BOS alone and the continuation gets none (no log p(BOS | BOS)); rolling windows start from the prefix
    token before the text's own tokens, as get_rolling_token_windows does."""
    gemma = load_model("gemma3-270m")
    assert gemma.prefix_token_id == 2 and gemma.encode("Hello world")[0] == 2
    context, continuation = gemma._encode_pair("", "Hello world")
    assert context == [2] and continuation == gemma.tokenizer.encode("Hello world", add_special_tokens=False)
    context, continuation = gemma._encode_pair("The sky is", " blue")
    assert context[0] == 2 and context.count(2) == 1 and 2 not in continuation
    (first_context, first_predicted), *_ = rolling_windows(gemma.encode("Hello world"), 2, gemma.max_length)
    assert first_context == [2] and first_predicted[0] == 2  # lm-eval scores the text's own BOS after the prefix
    assert "the tokenizer adds BOS 2" in gemma.info()["special_tokens"]


def test_max_length_shortens_the_window_and_cannot_lengthen_it(tmp_path, smollm2_folder, capsys):
    folder = make_tiny_llama_folder(tmp_path / "tiny", smollm2_folder, max_positions=64)
    text = RollingLoglikelihoodRequest(" one two three four" * 10)  # 40 tokens and more
    whole, short = load_model(f"hf:{folder}"), load_model(f"hf:{folder}", max_length=16)
    assert short.max_length == short.info()["max_length"] == 16 and short.fingerprint != whole.fingerprint
    windows = rolling_windows(short.encode(text.text), short.prefix_token_id, 16)
    assert len(windows) > 2 and all(len(context) + len(predicted) <= 17 for context, predicted in windows)
    assert short.loglikelihood_rolling([text]) != whole.loglikelihood_rolling([text])
    code = main(["run", "--model", f"hf:{folder}", "--tasks", "wikitext", "--limit", "1", "--max-length", "65",
                 "--output", str(tmp_path / "run")])
    assert code == 2 and "--max-length 65 is longer than the 64 positions" in capsys.readouterr().err
