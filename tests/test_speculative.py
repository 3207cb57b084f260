"""Speculative decoding and decoding without the KV cache (harness/models/generation.py, speculation.py,
speculators.py): greedy text identical to plain decoding token for token, at batch 1 and in continuous batches where
rows keep different numbers of drafts; sampled text distributed as the target's, by chi-square tests that a biased
rule fails; prompt lookup equal to transformers' own; bad input refused before any work."""

import json
import random
from collections import Counter

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from harness.cli import main
from harness.engine.cache import request_key
from harness.engine.requests import GenerateRequest
from harness.errors import UserError
from harness.models.decoding import sampling_probs
from harness.models.registry import load_model
from harness.models.speculation import Speculation, accept_sampled, parse_speculation
from harness.models.speculators import PromptLookup
from harness.systems.profiler import Profiler
from tests.test_continuous_batching import requests
from tests.tiny import make_tiny_gemma3_folder, make_tiny_llama_folder

# A chi-square test at this level fails a correct sampler once in 10,000 runs; every biased rule below is refused
# with p-values many orders of magnitude smaller.
LEVEL = 1e-4


def decoded(model, batch, speculation=None, draft=None, kv_cache=True, batch_size=3, seed=3):
    """Generations of `batch` with the model set to decode this way, then set back to plain decoding."""
    model.kv_cache = kv_cache
    if speculation is not None:
        model.speculate(parse_speculation(speculation), draft)
    try:
        return [(g.text, g.tokens, g.finish) for g in model.generate(batch, batch_size=batch_size, seed=seed)]
    finally:
        model.kv_cache, model.speculation, model.draft = True, None, None


# ---- prompt lookup ------------------------------------------------------------------------------------------


def test_prompt_lookup_proposes_what_transformers_proposes():
    """transformers' PromptLookupCandidateGenerator is the rule we follow: same drafts on random histories over a
    small vocabulary (many repeated n-grams), for several n-gram sizes and k, EOS (2) cut included."""
    from transformers.generation.candidate_generator import PromptLookupCandidateGenerator

    rng = random.Random(0)
    for _ in range(300):
        history = [rng.randrange(6) for _ in range(rng.randrange(2, 40))]
        ngram, k = rng.randrange(1, 4), rng.randrange(1, 6)
        peer = PromptLookupCandidateGenerator(eos_token_id=torch.tensor([2]), num_output_tokens=k,
                                              max_matching_ngram_size=ngram, max_length=10_000)
        candidates, _ = peer.get_candidates(torch.tensor([history]))
        assert PromptLookup(ngram, eos_token_id=2).lookup(history, k) == candidates[0, len(history):].tolist()


# ---- the rejection rule ---------------------------------------------------------------------------------------

TARGET = torch.tensor([0.40, 0.25, 0.15, 0.10, 0.06, 0.04], dtype=torch.float64)
DRAFT = torch.tensor([0.10, 0.40, 0.05, 0.30, 0.05, 0.10], dtype=torch.float64)


def two_tokens(rule, draft_probs, samples, k=2, seed=0):
    """(first, second) tokens of `samples` sequences decoded by `rule` where every position's target distribution
    is TARGET and drafts are drawn from `draft_probs` (None: the point mass on token 3, as prompt lookup proposes):
    under a correct rule each pair is distributed as TARGET x TARGET."""
    generator = torch.Generator().manual_seed(seed)
    pairs = []
    for _ in range(samples):
        tokens: list[int] = []
        while len(tokens) < 2:
            if draft_probs is None:
                drafts, q = [3] * k, None
            else:
                drafts = torch.multinomial(draft_probs, k, replacement=True, generator=generator).tolist()
                q = draft_probs.expand(k, -1)
            tokens += rule(drafts, q, TARGET.expand(k + 1, -1), generator)
        pairs.append(tuple(tokens[:2]))
    return pairs


def chi_square_p(pairs) -> float:
    observed = Counter(pairs)
    cells = [(a, b) for a in range(6) for b in range(6)]
    expected = np.array([float(TARGET[a] * TARGET[b]) for a, b in cells])
    expected *= len(pairs) / expected.sum()
    return chisquare([observed[c] for c in cells], expected).pvalue


def resample_from_target(drafts, q, p, generator):
    """A biased rule: a rejected draft is replaced by a draw from p itself, not from norm(max(0, p - q))."""
    for j, token in enumerate(drafts):
        q_token = 1.0 if q is None else float(q[j, token])
        if float(torch.rand(1, generator=generator)) < min(1.0, float(p[j, token]) / q_token):
            continue
        return drafts[:j] + [int(torch.multinomial(p[j], 1, generator=generator))]
    return drafts + [int(torch.multinomial(p[len(drafts)], 1, generator=generator))]


def always_accept(drafts, q, p, generator):
    """A biased rule: every draft kept, as if the draft model were the target."""
    return drafts + [int(torch.multinomial(p[len(drafts)], 1, generator=generator))]


@pytest.mark.parametrize("draft_probs", [DRAFT, None], ids=["draft-model", "point-mass"])
def test_the_rejection_rule_samples_the_target_distribution(draft_probs):
    assert chi_square_p(two_tokens(accept_sampled, draft_probs, 6000)) > LEVEL


@pytest.mark.parametrize("biased", [resample_from_target, always_accept])
@pytest.mark.parametrize("draft_probs", [DRAFT, None], ids=["draft-model", "point-mass"])
def test_the_test_refuses_a_biased_rule(biased, draft_probs):
    """The same test with the same number of samples would catch a rule that gets the rejection wrong."""
    assert chi_square_p(two_tokens(biased, draft_probs, 6000)) < 1e-12


# ---- greedy: the same text as plain decoding -----------------------------------------------------------------


@pytest.mark.slow  # 11 generations, five ways, on the real model (about 20 s)
def test_greedy_text_is_plain_greedy_text_token_for_token(smollm2):
    """Batch 1, and continuous batches of 3 (rows joining and leaving, keeping different numbers of drafts); a
    draft model (the int8 copy, which the target mostly agrees with: several drafts kept a step) and prompt lookup;
    and decoding without the KV cache."""
    batch = requests()
    plain = decoded(smollm2, batch)
    assert decoded(smollm2, batch, kv_cache=False) == plain
    for batch_size in (1, 3):
        assert decoded(smollm2, batch, "ngram=2,k=4", batch_size=batch_size) == plain
    draft = load_model("smollm2-135m:int8")
    assert decoded(smollm2, batch, "draft=smollm2-135m:int8,k=3", draft, batch_size=3) == plain


def test_greedy_speculation_with_holes_in_a_sliding_window(tmp_path, gemma3_folder):
    """A tiny Gemma 3 whose sliding-window layer sees 16 positions: prompt lookup leaves rejected drafts as holes in
    each row's cache, and the window must still count 16 real tokens. Continuous batches of 2 over prompts that
    repeat themselves, 40 tokens each, equal plain decoding."""
    model = load_model(f"hf:{make_tiny_gemma3_folder(tmp_path / 'tiny', gemma3_folder)}")
    batch = [GenerateRequest(text, stop=(), max_tokens=40) for text in
             ["one two three one two three one two", "red green blue red green", "a b c d a b c d a b", "x y x y"]]
    plain = decoded(model, batch, batch_size=2)
    model.profiler = profiler = Profiler()
    assert decoded(model, batch, "ngram=2,k=4", batch_size=2) == plain
    assert decoded(model, batch, kv_cache=False, batch_size=2) == plain
    speculation = profiler.summary()["run"]["speculation"]
    assert speculation["proposed"] > speculation["accepted"] > 0  # drafts were both kept and rejected


# ---- sampled: the target's distribution ----------------------------------------------------------------------

PROMPT = "apple, banana, cherry, apple, banana, cherry, apple, banana,"


def next_token_probs(model, context: list[int], continuations: list[tuple[int, ...]], temperature: float):
    """The target's exact sampling distribution after context + each continuation, by plain forward passes."""
    with torch.inference_mode():
        logits = model.model(torch.tensor([context + list(c) for c in continuations]))[:, -1]
    probs = sampling_probs(logits, temperature, 1.0).double()
    return probs / probs.sum(-1, keepdim=True)


def chi_square_of(observed: Counter, expected: dict, count: int) -> float:
    """Goodness of fit over the outcomes expected at least 5 times, the rest pooled in one cell."""
    cells = [outcome for outcome, p in expected.items() if p * count >= 5]
    assert len(cells) >= 3  # a spread distribution, or the test could not tell a biased rule
    want = [expected[c] * count for c in cells]
    got = [observed[c] for c in cells]
    return chisquare(got + [count - sum(got)], want + [count - sum(want)]).pvalue


@pytest.mark.slow  # 500 short samples on the real model (about 20 s)
def test_sampled_text_follows_the_target_distribution(smollm2):
    """Each sample's first token comes from the prefill, its second from the speculative step that follows (the
    draft kept, or the correction drawn after its rejection) and its third from that step (a bonus token after a
    kept draft) or the next. The pairs of first and second tokens, and the third token after the most frequent
    pair, are tested against the target's exact distributions, computed by plain forward passes. The draft is a
    model (its own distribution per row, which the rule reads); prompt lookup's point masses take the same path
    with q = None, tested above."""
    speculation, temperature, samples = "draft=smollm2-135m:layers-8,k=2", 1.0, 500
    batch = [GenerateRequest(PROMPT, stop=(), max_tokens=3, temperature=temperature)] * samples
    draft = load_model("smollm2-135m:layers-8")
    tokens = [tuple(t) for _, t, _ in decoded(smollm2, batch, speculation, draft, batch_size=samples)]
    context = smollm2.encode(PROMPT)
    first = next_token_probs(smollm2, context, [()], temperature)[0]
    likely = [t for t in range(len(first)) if first[t] * samples >= 5]
    second = next_token_probs(smollm2, context, [(t,) for t in likely], temperature)
    pairs = {(a, b): float(first[a] * second[i, b]) for i, a in enumerate(likely)
             for b in range(second.shape[1]) if second[i, b] * first[a] * samples >= 1}
    assert chi_square_of(Counter(t[:2] for t in tokens), pairs, samples) > LEVEL

    pair = Counter(t[:2] for t in tokens if len(t) == 3).most_common(1)[0][0]
    thirds = [t[2] for t in tokens if t[:2] == pair and len(t) == 3]
    third = next_token_probs(smollm2, context, [pair], temperature)[0]
    # EOS ends a sample early (a third token is then missing): it is left out of the distribution tested.
    third[smollm2.tokenizer.eos_token_id] = 0.0
    third /= third.sum()
    assert chi_square_of(Counter(thirds), dict(enumerate(third.tolist())), len(thirds)) > LEVEL


def test_sampled_answers_are_cached_apart_from_plain_sampling_and_greedy_ones_are_not():
    sampled, greedy = GenerateRequest("x", temperature=1.0), GenerateRequest("x")
    scheme = "speculative ngram=3,k=4"
    assert request_key(sampled, 1, 0, scheme) != request_key(sampled, 1, 0)
    assert request_key(greedy, 1, 0, scheme) == request_key(greedy, 1, 0)


# ---- bad input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("ngram=3,k=0", "k must be a whole number of at least 1"),
    ("draft=smollm2-135m,k=-1", "k must be a whole number of at least 1"),
    ("ngram=0", "ngram must be"),
    ("k=4", "exactly one of"),
    ("ngram=2,draft=smollm2-135m", "exactly one of"),
    ("turbo", "expected draft=SPEC,k=K or ngram=N,k=K"),
])
def test_bad_speculation_is_one_line(text, message):
    with pytest.raises(UserError, match=message):
        parse_speculation(text)


def test_a_draft_spec_may_hold_commas():
    assert parse_speculation("draft=hf:/a+lora=/b,merge,k=2") == Speculation(k=2, draft="hf:/a+lora=/b,merge")
    assert parse_speculation("ngram=3") == Speculation(k=4, ngram=3)


@pytest.mark.parametrize("arguments, message", [
    (["--model", "openai:m@http://127.0.0.1:9/v1", "--speculative", "ngram=3"], "openai: models cannot"),
    (["--model", "smollm2-135m", "--speculative", "draft=openai:m@http://127.0.0.1:9/v1"], "must be one of our"),
    (["--model", "smollm2-135m", "--speculative", "ngram=3,k=0"], "k must be"),
    (["--model", "smollm2-135m", "--speculative", "ngram=3", "--no-kv-cache"], "cannot run with --no-kv-cache"),
])
def test_the_command_refuses_before_any_work(tmp_path, capsys, arguments, message):
    output = tmp_path / "run"
    assert main(["run", *arguments, "--tasks", "gsm8k", "--output", str(output)]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
    assert not output.exists()


def test_a_draft_with_another_tokenizer_is_refused(tmp_path, capsys, smollm2_folder, gemma3_folder):
    target = make_tiny_llama_folder(tmp_path / "llama", smollm2_folder)
    draft = make_tiny_gemma3_folder(tmp_path / "gemma", gemma3_folder)
    output = tmp_path / "run"
    capsys.readouterr()  # what making the folders printed
    code = main(["run", "--model", f"hf:{target}", "--tasks", "gsm8k", "--speculative", f"draft=hf:{draft},k=2",
                 "--output", str(output)])
    error = capsys.readouterr().err
    assert code == 2 and "another tokenizer" in error and len(error.strip().splitlines()) == 1
    assert not output.exists()


def test_a_speculative_run_records_and_prints_what_its_drafts_were_worth(tmp_path, capsys, smollm2_folder):
    tiny = make_tiny_llama_folder(tmp_path / "tiny", smollm2_folder, max_positions=2048)
    output = tmp_path / "run"
    assert main(["run", "--model", f"hf:{tiny}", "--tasks", "gsm8k", "--limit", "2", "--speculative", "ngram=1,k=3",
                 "--output", str(output)]) == 0
    assert "speculative decoding: " in capsys.readouterr().out
    record = json.loads((output / "results.json").read_text())
    assert record["model"]["decoding"] == {"kv_cache": True, "speculative": "ngram=1,k=3"}
    assert (record["settings"]["speculative"], record["settings"]["kv_cache"]) == ("ngram=1,k=3", True)
    speculation = record["systems"]["tasks"]["gsm8k"]["speculation"]
    assert speculation["row_steps"] >= speculation["target_steps"] > 0 and speculation["proposed"] > 0
    assert 0 <= speculation["acceptance_rate"] <= 1 and 0 <= speculation["draft_share"] < 1


def test_a_layer_truncated_copy_keeps_its_first_layers(tmp_path, smollm2_folder):
    """`:layers-N`, the cheap draft: the first N layers of the model, their weights untouched; N must be below the
    model's layer count and at least 1."""
    folder = make_tiny_llama_folder(tmp_path / "tiny", smollm2_folder)
    whole, truncated = load_model(f"hf:{folder}"), load_model(f"hf:{folder}:layers-1")
    assert len(truncated.model.model.layers) == truncated.model.config.num_hidden_layers == 1
    assert truncated.info()["variant"]["layers_kept"] == 1 and truncated.fingerprint != whole.fingerprint
    kept, original = truncated.model.model.layers[0], whole.model.model.layers[0]
    assert all(torch.equal(a, b) for a, b in zip(kept.state_dict().values(), original.state_dict().values()))
    with pytest.raises(UserError, match="has 2 layers; keep fewer"):
        load_model(f"hf:{folder}:layers-2")
    with pytest.raises(UserError, match="keep at least 1 layer"):
        load_model(f"hf:{folder}:layers-0")
