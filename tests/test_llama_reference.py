"""The reference LLaMA against transformers' LlamaForCausalLM on the same random weights (tiny GQA config)."""

import json

import pytest
import torch
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM

from harness.models.llama import load_llama

TINY = dict(
    vocab_size=101, hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=6,
    num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000.0,
)


def save_random_hf_llama(folder, tie: bool, seed: int = 0):
    torch.manual_seed(seed)
    hf = LlamaForCausalLM(HFLlamaConfig(**TINY, tie_word_embeddings=tie)).eval()
    with torch.no_grad():  # non-trivial norms, so a norm-weight bug cannot hide behind ones
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    hf.save_pretrained(folder)
    return hf


@pytest.mark.parametrize("tie", [True, False])
def test_logits_match_transformers(tmp_path, tie):
    hf = save_random_hf_llama(tmp_path, tie)
    ours = load_llama(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] == tie
    assert (ours.lm_head.weight is ours.model.embed_tokens.weight) == tie
    ids = torch.randint(0, TINY["vocab_size"], (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(ids)
    # fp32 throughout: the two differ only in summation order, which stays far below 1e-4 on logits of O(1).
    assert (got - expected).abs().max().item() <= 1e-4


def model_with_ids_and_logits(tmp_path):
    """A tiny random model, two rows of 30 token ids, and their logits from one full forward pass."""
    save_random_hf_llama(tmp_path, tie=True)
    model = load_llama(tmp_path)
    ids = torch.randint(0, TINY["vocab_size"], (2, 30), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return model, ids, model(ids)


def test_kv_cache_decoding_equals_full_forward(tmp_path):
    model, ids, full = model_with_ids_and_logits(tmp_path)
    with torch.no_grad():
        cache = model.new_cache()
        pieces = [model(ids[:, :12], cache=cache), model(ids[:, 12:20], cache=cache)]  # a block with a cache
        pieces += [model(ids[:, t:t + 1], cache=cache) for t in range(20, 30)]  # then one token at a time
    incremental = torch.cat(pieces, dim=1)
    assert cache.length == 30
    assert (incremental - full).abs().max().item() <= 1e-4


def test_reserved_room_appends_in_place_with_the_same_logits(tmp_path):
    model, ids, full = model_with_ids_and_logits(tmp_path)
    with torch.no_grad():
        cache = model.new_cache()
        pieces = [model(ids[:, :12], cache=cache)]
        cache.reserve(1)
        buffer = cache.keys[0].data_ptr()
        pieces += [model(ids[:, t:t + 1], cache=cache) for t in range(12, 20)]
        assert cache.keys[0].data_ptr() == buffer  # written in place: no copy of the cache per step
        # Generation replaces a finished row's cache with the others' rows: the room goes with it, appends still fit.
        cache.keys = [k[:1] for k in cache.keys]
        cache.values = [v[:1] for v in cache.values]
        pieces = [p[:1] for p in pieces] + [model(ids[:1, t:t + 1], cache=cache) for t in range(20, 30)]
    assert cache.length == 30
    assert (torch.cat(pieces, dim=1) - full[:1]).abs().max().item() <= 1e-4


def test_left_padding_gives_the_unpadded_logits(tmp_path):
    save_random_hf_llama(tmp_path, tie=True)
    model = load_llama(tmp_path)
    ids = torch.randint(1, TINY["vocab_size"], (1, 10), generator=torch.Generator().manual_seed(3))
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 4), torch.ones(1, 10)], dim=1).long()
    with torch.no_grad():
        alone = model(ids)
        in_batch = model(padded, attention_mask=mask)[:, 4:]
    assert not torch.isnan(model(padded, attention_mask=mask)).any()
    assert (in_batch - alone).abs().max().item() <= 1e-4
