"""The reference GPT against transformers' GPT2LMHeadModel on the same random weights (tiny config), its padding and
KV-cache semantics, the checkpoint layouts it accepts, and GPT-2's real tokenizer written into a model folder."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from harness.errors import UserError
from harness.models.gpt import load_gpt2, write_gpt2_tokenizer

# initializer_range 0.2 rather than GPT-2's 0.02: MLP inputs and logits of O(1) rather than O(0.01), so the
# difference between the two GELUs (up to 4.7e-4 per activation) reaches the logits (about 1e-3) instead of vanishing.
TINY = dict(vocab_size=103, n_embd=32, n_layer=2, n_head=4, n_positions=64, layer_norm_epsilon=1e-5,
            bos_token_id=0, eos_token_id=0, initializer_range=0.2)


def save_random_hf_gpt2(folder, tie: bool = True, activation: str = "gelu_new", seed: int = 0):
    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(GPT2Config(**TINY, activation_function=activation, tie_word_embeddings=tie)).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases, so a bug there cannot hide behind ones and zeros
        for name, p in hf.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif ".ln_" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    hf.save_pretrained(folder)
    return hf


def random_ids(shape, seed, low=0):
    return torch.randint(low, TINY["vocab_size"], shape, generator=torch.Generator().manual_seed(seed))


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("tie, activation", [(True, "gelu_new"), (False, "gelu")])
def test_logits_match_transformers(tmp_path, tie, activation):
    hf = save_random_hf_gpt2(tmp_path, tie, activation)
    ours = load_gpt2(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] == tie
    assert (ours.lm_head.weight is ours.transformer.wte.weight) == tie
    assert isinstance(ours.transformer.h[1].attn.c_attn, nn.Linear)  # what quantization and LoRA look for
    assert ours.config.max_position_embeddings == TINY["n_positions"]
    ids = random_ids((3, 40), seed=1)
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(ids)
    # fp32 throughout: the two differ only in summation order (addmm on (in, out) weights against nn.Linear,
    # attention kernels), about 1e-6 on these logits of magnitude up to ~5. 1e-4 leaves room for other BLAS
    # builds and still fails the wrong GELU (about 1e-3 here), let alone a missing bias or transpose.
    assert max_diff(got, expected) <= 1e-4


def test_left_padding_gives_each_sequence_alone(tmp_path):
    save_random_hf_gpt2(tmp_path)
    model = load_gpt2(tmp_path)
    long, short = random_ids((1, 10), seed=3, low=1), random_ids((1, 6), seed=4, low=1)
    padded = torch.cat([long, torch.cat([torch.zeros(1, 4, dtype=torch.long), short], dim=1)])
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, :4] = 0
    with torch.no_grad():
        in_batch = model(padded, attention_mask=mask)
        long_alone, short_alone = model(long), model(short)
    assert not torch.isnan(in_batch).any()  # padding queries see themselves rather than nothing
    # Masked keys weigh exactly zero and positions count real tokens only, so the sole difference is the
    # summation order of differently shaped matmuls: fp32 rounding, about 1e-6 at these logits (up to ~5).
    assert max_diff(in_batch[0:1], long_alone) <= 1e-5
    assert max_diff(in_batch[1:2, 4:], short_alone) <= 1e-5


def test_kv_cache_decoding_equals_full_forward(tmp_path):
    save_random_hf_gpt2(tmp_path)
    model = load_gpt2(tmp_path)
    ids = random_ids((2, 30), seed=2)
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache()
        pieces = [model(ids[:, :12], cache=cache), model(ids[:, 12:20], cache=cache)]  # a block with a cache
        pieces += [model(ids[:, t:t + 1], cache=cache) for t in range(20, 30)]  # then one token at a time
    assert cache.length == 30
    # The same keys, values and positions; only the query block's shape changes the fp32 summation order.
    assert max_diff(torch.cat(pieces, dim=1), full) <= 1e-5


def test_kv_cache_decoding_of_a_left_padded_batch(tmp_path):
    # The adapter's generation path: a left-padded prompt, then one token at a time with a growing mask.
    save_random_hf_gpt2(tmp_path)
    model = load_gpt2(tmp_path)
    ids = random_ids((2, 16), seed=5, low=1)
    ids[1, :5] = 0
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, :5] = 0
    with torch.no_grad():
        full = model(ids, attention_mask=mask)
        cache = model.new_cache()
        pieces = [model(ids[:, :10], attention_mask=mask[:, :10], cache=cache)]
        pieces += [model(ids[:, t:t + 1], attention_mask=mask[:, :t + 1], cache=cache) for t in range(10, 16)]
    incremental = torch.cat(pieces, dim=1)
    # Padding positions' logits are meaningless; the real ones must agree (same argument as above).
    assert max_diff(incremental[mask.bool()], full[mask.bool()]) <= 1e-5


def test_checkpoint_that_does_not_fit_the_config_is_a_one_line_user_error(tmp_path):
    save_random_hf_gpt2(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "n_embd": 48}))
    with pytest.raises(UserError) as error:
        load_gpt2(tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert "does not fit" in message and "transformer.wte.weight" in message


def test_separate_qkv_weights_load_like_the_fused_ones(tmp_path):
    save_random_hf_gpt2(tmp_path / "fused")
    state = load_file(tmp_path / "fused" / "model.safetensors")
    width = TINY["n_embd"]
    for i in range(TINY["n_layer"]):
        prefix = f"transformer.h.{i}.attn."
        # Conv1D stores c_attn as (in, 3 * out); separate projections are nn.Linear's (out, in).
        q, k, v = state.pop(prefix + "c_attn.weight").split(width, dim=1)
        qb, kb, vb = state.pop(prefix + "c_attn.bias").split(width)
        for part, weight, bias in (("q", q, qb), ("k", k, kb), ("v", v, vb)):
            state[f"{prefix}{part}_proj.weight"] = weight.t().contiguous()
            state[f"{prefix}{part}_proj.bias"] = bias.contiguous()
    (tmp_path / "separate").mkdir()
    save_file(state, tmp_path / "separate" / "model.safetensors")
    (tmp_path / "separate" / "config.json").write_text((tmp_path / "fused" / "config.json").read_text())
    ids = random_ids((2, 20), seed=6)
    with torch.no_grad():
        fused, separate = load_gpt2(tmp_path / "fused")(ids), load_gpt2(tmp_path / "separate")(ids)
    assert torch.equal(fused, separate)  # the fused weight is rebuilt bit for bit, so the logits are identical


def test_unprefixed_checkpoint_with_mask_buffers_loads(tmp_path):
    # The layout of the original gpt2 upload: saved from GPT2Model (no "transformer." prefix), with the
    # attention-mask buffers older transformers versions stored alongside the weights.
    save_random_hf_gpt2(tmp_path / "new")
    state = {k.removeprefix("transformer."): v for k, v in load_file(tmp_path / "new" / "model.safetensors").items()}
    for i in range(TINY["n_layer"]):
        state[f"h.{i}.attn.bias"] = torch.ones(1, 1, TINY["n_positions"], TINY["n_positions"]).tril()
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    (tmp_path / "old").mkdir()
    save_file(state, tmp_path / "old" / "model.safetensors")
    (tmp_path / "old" / "config.json").write_text((tmp_path / "new" / "config.json").read_text())
    ids = random_ids((1, 12), seed=7)
    with torch.no_grad():
        assert torch.equal(load_gpt2(tmp_path / "old")(ids), load_gpt2(tmp_path / "new")(ids))


def test_written_gpt2_tokenizer_has_gpt2s_ids(tmp_path):
    write_gpt2_tokenizer(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    ids = tokenizer("Hello world")["input_ids"]
    assert ids == [15496, 995]  # GPT-2's well-known ids: "Hello" and "Ġworld"; no special tokens are added
    assert tokenizer.decode(ids) == "Hello world"
    assert tokenizer.eos_token_id == 50256 and len(tokenizer) == 50257
    assert tokenizer("a<|endoftext|>")["input_ids"] == [64, 50256]  # the special token is one id, not split
