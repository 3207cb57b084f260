"""Mixture of experts: the reference Mixtral against transformers' MixtralForCausalLM on the same random weights,
and the dense-to-MoE conversion (moefy) of a tiny reference LLaMA."""

import copy
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import MixtralConfig as HFMixtralConfig
from transformers import MixtralForCausalLM

from harness.errors import UserError
from harness.models.llama import Llama, LlamaConfig
from harness.models.mixtral import load_mixtral
from harness.models.moe import expert_load, moefy, reset_expert_load, sparse_moe_layers

TINY_MIXTRAL = dict(
    vocab_size=101, hidden_size=48, intermediate_size=40, num_hidden_layers=3, num_attention_heads=6,
    num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=128,
    rms_norm_eps=1e-5,
)


def save_random_hf_mixtral(folder, layout: str, seed: int = 0):
    torch.manual_seed(seed)
    hf = MixtralForCausalLM(HFMixtralConfig(**TINY_MIXTRAL)).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:  # non-trivial norms, so a norm-weight bug cannot hide behind ones
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:  # fan-in scaled instead of std 0.02: logits of O(1), and router logits far enough apart
                p.normal_(0.0, p.shape[-1] ** -0.5)  # that rounding cannot change which experts are chosen
    if layout == "per-expert":  # what save_pretrained writes: block_sparse_moe.experts.{j}.w1/w2/w3
        hf.save_pretrained(folder)
    else:  # transformers 5's in-memory names: mlp.gate, mlp.experts.gate_up_proj / down_proj
        hf.config.save_pretrained(folder)
        save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, folder / "model.safetensors")
    return hf


def random_ids(shape, seed):
    return torch.randint(0, TINY_MIXTRAL["vocab_size"], shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("layout", ["per-expert", "fused"])
def test_mixtral_logits_match_transformers(tmp_path, layout):
    hf = save_random_hf_mixtral(tmp_path, layout)
    with safe_open(tmp_path / "model.safetensors", "pt") as saved:
        assert ("model.layers.0.block_sparse_moe.experts.0.w1.weight" in saved.keys()) == (layout == "per-expert")
    ours = load_mixtral(tmp_path)
    ids = random_ids((3, 40), seed=1)
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(ids)
    # fp32 throughout and the same experts chosen (router logits of O(1) are far apart relative to rounding), so
    # the two differ only in summation order: ~1e-6 relative, far below 1e-4 on logits of O(1).
    assert expected.abs().max().item() > 1.0
    assert (got - expected).abs().max().item() <= 1e-4


def test_mixtral_kv_cache_decoding_equals_full_forward(tmp_path):
    save_random_hf_mixtral(tmp_path, "per-expert")
    model = load_mixtral(tmp_path)
    ids = random_ids((2, 30), seed=2)
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache()
        pieces = [model(ids[:, :12], cache=cache), model(ids[:, 12:20], cache=cache)]  # a block with a cache
        pieces += [model(ids[:, t:t + 1], cache=cache) for t in range(20, 30)]  # then one token at a time
    assert cache.length == 30
    # Same computation in a different grouping of positions; routing is per token, so it cannot differ.
    assert (torch.cat(pieces, dim=1) - full).abs().max().item() <= 1e-4


def test_mixtral_left_padded_batch_gives_each_sequence_alone(tmp_path):
    save_random_hf_mixtral(tmp_path, "per-expert")
    model = load_mixtral(tmp_path)
    long, short = random_ids((1, 10), seed=3), random_ids((1, 6), seed=4)
    batch = torch.cat([long, torch.cat([torch.zeros(1, 4, dtype=torch.long), short], dim=1)])
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, :4] = 0
    with torch.no_grad():
        together = model(batch, attention_mask=mask)
        alone_long, alone_short = model(long), model(short)
    assert not torch.isnan(together).any()
    assert (together[0] - alone_long[0]).abs().max().item() <= 1e-4
    assert (together[1, 4:] - alone_short[0]).abs().max().item() <= 1e-4


def test_mixtral_expert_load_counts_every_token_top_k_times(tmp_path):
    save_random_hf_mixtral(tmp_path, "per-expert")
    model = load_mixtral(tmp_path)
    with torch.no_grad():
        model(random_ids((2, 15), seed=5))
    load = expert_load(model)
    assert len(load["layers"]) == TINY_MIXTRAL["num_hidden_layers"]
    for layer in load["layers"]:
        assert sum(layer["tokens_per_expert"]) == 2 * 15 * TINY_MIXTRAL["num_experts_per_tok"]
    reset_expert_load(model)
    assert all(sum(layer["tokens_per_expert"]) == 0 for layer in expert_load(model)["layers"])


def test_mixtral_refuses_sliding_window_attention(tmp_path):
    save_random_hf_mixtral(tmp_path, "per-expert")
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "sliding_window": 16}))
    with pytest.raises(UserError, match="sliding-window"):
        load_mixtral(tmp_path)


# --- moefy: a dense reference LLaMA split into experts ----------------------------------------------------------

TINY_LLAMA = LlamaConfig(vocab_size=101, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                         num_attention_heads=6, num_key_value_heads=2, rms_norm_eps=1e-5, tie_word_embeddings=False)


def random_llama(seed: int = 0) -> Llama:
    # PyTorch's default init: weights of fan-in scale, so every MLP matters and the logits are O(1) (untied: a tied
    # N(0, 1) embedding would make them O(50), where one rounding step of fp32 is already ~4e-6).
    torch.manual_seed(seed)
    model = Llama(TINY_LLAMA).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    return model


def test_moefy_with_every_expert_chosen_equals_the_dense_model():
    model = random_llama()
    ids = random_ids((3, 20), seed=6)
    with torch.no_grad():
        dense = model(ids)
        moefy(model, experts=4, top_k=4)
        moe = model(ids)
    assert len(sparse_moe_layers(model)) == TINY_LLAMA.num_hidden_layers
    # The experts partition the neurons and are summed with weight 1, so only the summation order of the down
    # projection changes (4 partial sums of 24 instead of one of 96): a few fp32 rounding steps (~1e-7 each on
    # logits of O(1); 5e-7 measured), under 1e-5 with room for another BLAS's order.
    assert (moe - dense).abs().max().item() <= 1e-5


def test_moefy_with_fewer_experts_changes_the_logits():
    model = random_llama()
    ids = random_ids((3, 20), seed=6)
    with torch.no_grad():
        dense = model(ids)
        moefy(model, experts=4, top_k=2)
        moe = model(ids)
    assert (moe - dense).abs().max().item() > 1e-2


def test_moefy_report_counts_active_parameters():
    report = moefy(random_llama(), experts=4, top_k=1)
    # By hand: embedding and output head 101*48 = 4848 each, final norm 48; per layer attention
    # q 48*48 + k 48*16 + v 48*16 + o 48*48 = 6144, two norms 96, router (centres and rank-4 spread) 4*(1+4)*48 =
    # 960, experts 3*48*96 = 13824 in all, of which one expert of 24 neurons, 3*48*24 = 3456, is active.
    assert report["total_parameters"] == 2 * 4848 + 48 + 3 * (6144 + 96 + 960 + 13824) == 72816
    assert report["active_parameters_per_token"] == 2 * 4848 + 48 + 3 * (6144 + 96 + 960 + 3456) == 41712
    assert (report["experts"], report["top_k"], report["neurons_per_expert"]) == (4, 1, 24)
    assert report["variant"] == "moe-e4k1"


def test_moefy_experts_partition_the_neurons_evenly():
    model = random_llama()
    dense = copy.deepcopy(model.model.layers[0].mlp)
    moefy(model, experts=4, top_k=2)
    experts = model.model.layers[0].mlp.experts
    gate_rows = torch.cat([expert.gate_proj.weight for expert in experts])
    assert all(expert.gate_proj.weight.shape == (24, 48) for expert in experts)
    # Every dense neuron exactly once: the sorted rows are the same set.
    assert torch.equal(gate_rows.sort(dim=0).values, dense.gate_proj.weight.sort(dim=0).values)


def test_router_scores_the_expected_relu_of_a_gaussian_fit_to_each_experts_gate_rows():
    model = random_llama()
    moefy(model, experts=24, top_k=2)  # 4 neurons per expert: rank 4 keeps their whole covariance, so exact
    moe = model.model.layers[1].mlp
    x = torch.randn(5, TINY_LLAMA.hidden_size, generator=torch.Generator().manual_seed(9))
    pre_activations = torch.stack([x @ expert.gate_proj.weight.T for expert in moe.experts], dim=1)  # (5, 24, 4)
    mean, std = pre_activations.mean(dim=-1), pre_activations.std(dim=-1, correction=0)
    normal = torch.distributions.Normal(0.0, 1.0)
    expected = mean * normal.cdf(mean / std) + std * normal.log_prob(mean / std).exp()
    with torch.no_grad():
        got = moe.router(x)
    # fp32 on values of O(1); the router reaches the same numbers through an SVD, a few rounding steps away.
    assert (got - expected).abs().max().item() <= 1e-5


def test_moefy_expert_load_adds_up_to_tokens_times_k():
    model = random_llama()
    moefy(model, experts=4, top_k=3)
    with torch.no_grad():
        model(random_ids((2, 25), seed=7))
        model(random_ids((1, 10), seed=8))
    load = expert_load(model)
    for layer in load["layers"]:
        assert sum(layer["tokens_per_expert"]) == (2 * 25 + 10) * 3
        assert 0.0 <= layer["load_balance_cv"] <= (4 / 3 - 1) ** 0.5  # its range: 0 to sqrt(E / K - 1)
    reset_expert_load(model)
    assert expert_load(model)["mean_load_balance_cv"] is None


def test_moefy_refuses_an_indivisible_split():
    with pytest.raises(UserError, match="96 intermediate neurons into 5"):
        moefy(random_llama(), experts=5, top_k=1)
    with pytest.raises(UserError):
        moefy(random_llama(), experts=4, top_k=5)
