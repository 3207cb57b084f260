"""The profiler wired into real runs: what it counts matches what the adapter did, and every run records it."""

import json

import pandas as pd
import pytest

from harness.cli import main
from harness.engine.requests import GenerateRequest, LoglikelihoodRequest
from harness.systems.profiler import Profiler
from tests.tiny import make_tiny_llama_folder


def test_counts_match_the_adapters_work(smollm2):
    smollm2.profiler = Profiler(smollm2.device)
    try:
        smollm2.profiler.start()
        with smollm2.profiler.task("gen"):
            requests = [GenerateRequest("The capital of France is", max_tokens=5),
                        GenerateRequest("One, two, three,", max_tokens=3)]
            generations = smollm2.generate(requests, batch_size=2)
        with smollm2.profiler.task("ll"):
            smollm2.loglikelihood([LoglikelihoodRequest("Paris is in", " France"),
                                   LoglikelihoodRequest("Paris is in", " Spain")], batch_size=4)
        smollm2.profiler.stop()
        summary = smollm2.profiler.summary()
    finally:
        smollm2.profiler = None
    gen, ll = summary["tasks"]["gen"], summary["tasks"]["ll"]
    assert gen["generated_tokens"] == sum(len(g.tokens) for g in generations)
    assert gen["prefill"]["tokens"] == sum(len(smollm2.encode(r.context)) for r in requests)
    assert gen["batches"]["sizes"] == {"2": 1} and gen["ttft_s"]["n"] == 2
    # Both answers are one token: the model input (the pair minus its last token) is the same, read once.
    assert [len(smollm2.encode(" France")), len(smollm2.encode(" Spain"))] == [1, 1]
    assert ll["prefill"]["tokens"] == len(smollm2.encode("Paris is in")) and ll["batches"]["count"] == 1
    assert summary["run"]["prefill"]["tokens"] == gen["prefill"]["tokens"] + ll["prefill"]["tokens"]
    assert summary["run"]["energy_j"]["value"] is None and "cpu" in summary["run"]["energy_j"]["reason"]


@pytest.mark.slow
def test_every_run_records_its_systems_figures(tmp_path, runs_share_smollm2, capsys):
    out = tmp_path / "run"
    # In this process, on the session's model (conftest.runs_share_smollm2): the run puts its own profiler on it.
    code = main(["run", "--model", "smollm2-135m", "--tasks", "mmlu_anatomy,gsm8k", "--limit", "2", "--output",
                 str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "systems (" in printed.out and "TTFT" in printed.out
    record = json.loads((out / "results.json").read_text())
    systems = record["systems"]
    assert set(systems["tasks"]) == {"mmlu_anatomy", "gsm8k"}
    assert systems["tasks"]["mmlu_anatomy"]["prefill"]["tokens_per_s"] > 0
    assert systems["tasks"]["gsm8k"]["ttft_s"]["n"] == 2 and systems["tasks"]["gsm8k"]["decode"]["tokens"] > 0
    assert systems["memory"]["peak_rss_bytes"] > 100 << 20
    assert systems["gpu"]["energy_j"]["value"] is None  # no GPU here: n/a with a reason, never 0
    hardware = record["environment"]["hardware"]
    assert hardware["logical_cores"] >= 1 and hardware["torch_version"]
    frame = pd.read_csv(out / "results.csv")
    rows = frame[frame.metric == "systems:prefill.tokens_per_s"]
    assert set(rows.task) == {"mmlu_anatomy", "gsm8k", "run"} and (rows.value > 0).all()


def test_profile_sweeps_batch_sizes_and_prompt_lengths(tmp_path, smollm2_folder, capsys):
    tiny = make_tiny_llama_folder(tmp_path / "tiny", smollm2_folder)
    csv = tmp_path / "profile.csv"
    code = main(["profile", "--model", f"hf:{tiny}", "--batch-sizes", "1,2", "--prompt-lengths", "8,16",
                 "--new-tokens", "4", "--repeats", "2", "--output", str(csv)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "GFLOP/s" in printed.out and f"csv: {csv}" in printed.out
    frame = pd.read_csv(csv)
    assert sorted(zip(frame.batch_size, frame.prompt_length)) == [(1, 8), (1, 16), (2, 8), (2, 16)]
    assert (frame.prefill_tokens_per_s > 0).all() and (frame.prefill_tokens_per_s_min <= frame.prefill_tokens_per_s).all()
    assert (frame.fraction_of_matmul_limit > 0).all()
    code = main(["profile", "--model", f"hf:{tiny}", "--prompt-lengths", "60", "--new-tokens", "10", "--output",
                 str(tmp_path / "x.csv")])
    assert code == 2 and "exceed the model's 64 positions" in capsys.readouterr().err


def test_profile_compares_ways_of_decoding(tmp_path, smollm2_folder, capsys):
    """--kv-cache both and --speculative: each configuration decoded plainly, without the cache and speculatively,
    with ratios to the plain row (1 for it) and the speculative row's acceptance; --new-tokens sweeps too."""
    tiny = make_tiny_llama_folder(tmp_path / "tiny", smollm2_folder)
    csv = tmp_path / "profile.csv"
    code = main(["profile", "--model", f"hf:{tiny}", "--batch-sizes", "2", "--prompt-lengths", "24",
                 "--new-tokens", "4,6", "--repeats", "1", "--kv-cache", "both", "--speculative", "ngram=1,k=3",
                 "--output", str(csv)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    frame = pd.read_csv(csv)
    assert list(zip(frame.decoding, frame.new_tokens)) == [
        (way, count) for count in (4, 6) for way in ("kv cache", "no kv cache", "speculative ngram=1,k=3")]
    plain = frame[frame.decoding == "kv cache"]
    assert (plain.decode_tokens_per_s_vs_plain == 1).all() and (plain.latency_s_vs_plain == 1).all()
    assert (frame.decode_tokens_per_s_vs_plain > 0).all()
    speculative = frame[frame.decoding.str.startswith("speculative")]
    assert speculative.acceptance_rate.between(0, 1).all() and (speculative.tokens_per_row_step >= 1).all()
    assert "no kv cache" in printed.out and "ngram=1,k=3" in printed.out
