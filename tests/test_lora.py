"""PEFT LoRA adapters on our reference models, against PeftModel on the transformers model with the same weights.

Each adapter is made by the peft library itself (init_lora_weights=False, so that B is random rather than zero and
the adapter really changes the logits) and saved with save_pretrained, so these tests read PEFT's own file format.

Tolerance: everything runs in fp32. Unmerged, our model and PeftModel differ only in the reference model's
summation order (bounded by 1e-4 in test_llama_reference.py); merged, W + s·B@A is additionally rounded once per
weight (relative 6e-8), far below that on logits of O(1). So 1e-4, the reference model's own budget, holds.
"""

import hashlib
import json
from pathlib import Path

import peft  # a test dependency (pyproject's test extra): the library whose adapters we read
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from harness.errors import UserError
from harness.models import gpt
from harness.models.llama import load_llama
from harness.models.lora import LoraLinear, apply_lora, parse_lora_suffix


TOLERANCE = 1e-4  # see the module docstring
TINY_LLAMA = dict(vocab_size=101, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=6,
                  num_key_value_heads=2, max_position_embeddings=64)
IDS = torch.randint(0, 101, (2, 20), generator=torch.Generator().manual_seed(1))
PLAIN = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])


def save_tiny_llama(folder, seed=0, **overrides):
    torch.manual_seed(seed)
    LlamaForCausalLM(LlamaConfig(**{**TINY_LLAMA, **overrides})).save_pretrained(folder)
    return folder


def save_peft_adapter(base_folder, adapter_folder, model_class=LlamaForCausalLM, seed=0, **lora):
    torch.manual_seed(seed)
    model = peft.get_peft_model(model_class.from_pretrained(base_folder),
                                peft.LoraConfig(init_lora_weights=False, **lora))
    model.save_pretrained(adapter_folder)
    return adapter_folder


def peft_logits(base_folder, adapter_folder, model_class=LlamaForCausalLM):
    model = peft.PeftModel.from_pretrained(model_class.from_pretrained(base_folder), adapter_folder).eval()
    with torch.no_grad():
        return model(IDS).logits


def logits(model):
    with torch.no_grad():
        return model(IDS)


def snapshot(model):
    return [(name, type(module)) for name, module in model.named_modules()], \
        {name: tensor.clone() for name, tensor in model.state_dict().items()}


def assert_unchanged(model, before):
    modules, state = snapshot(model)
    assert modules == before[0]
    assert state.keys() == before[1].keys()
    assert all(torch.equal(state[name], before[1][name]) for name in state)


@pytest.fixture
def base(tmp_path):
    return save_tiny_llama(tmp_path / "base")


CASES = {
    "plain": PLAIN,
    "rank and alpha patterns": dict(PLAIN, rank_pattern={"layers.1.self_attn.q_proj": 2}, alpha_pattern={"v_proj": 3}),
    "rslora": dict(PLAIN, use_rslora=True),
    "regex targets": dict(r=4, lora_alpha=8, target_modules=r".*\.(o_proj|up_proj)"),
}


@pytest.mark.parametrize("case", CASES)
def test_unmerged_and_merged_logits_match_peft(tmp_path, base, case):
    adapter = save_peft_adapter(base, tmp_path / "adapter", **CASES[case])
    tensors = load_file(adapter / "adapter_model.safetensors")
    assert all(t.abs().max() > 0 for name, t in tensors.items() if "lora_B" in name)  # the adapter does something
    expected = peft_logits(base, adapter)
    base_logits = logits(load_llama(base))

    unmerged = load_llama(base)
    base_weights = {n: p.clone() for n, p in unmerged.named_parameters()}
    report = apply_lora(unmerged, adapter)
    got_unmerged = logits(unmerged)
    merged = load_llama(base)
    apply_lora(merged, adapter, merge=True)
    got_merged = logits(merged)

    print(f"{case}: max |Δlogit| unmerged {(got_unmerged - expected).abs().max():.2e}, "
          f"merged {(got_merged - expected).abs().max():.2e}, LoRA effect {(expected - base_logits).abs().max():.2e}")
    assert (got_unmerged - expected).abs().max().item() <= TOLERANCE
    assert (got_merged - expected).abs().max().item() <= TOLERANCE
    assert (expected - base_logits).abs().max().item() > 100 * TOLERANCE

    wrapped = {n: m for n, m in unmerged.named_modules() if isinstance(m, LoraLinear)}
    assert len(wrapped) == report["targets"]["count"] == len(tensors) // 2
    # Unmerged keeps the base weights and A, B apart; merged leaves no wrapper behind.
    assert all(torch.equal(p, base_weights[n.replace(".base.", ".")]) for n, p in unmerged.named_parameters()
               if "lora_" not in n)
    assert not any(isinstance(m, LoraLinear) for m in merged.modules())
    assert merged.state_dict().keys() == load_llama(base).state_dict().keys()


def test_rank_alpha_patterns_and_rslora_give_the_expected_scalings(tmp_path, base):
    # Overrides are keyed by the end of the module name at a dot; rsLoRA scales by alpha / sqrt(r) instead of alpha / r.
    patterned = save_peft_adapter(base, tmp_path / "patterns", **CASES["rank and alpha patterns"])
    model = load_llama(base)
    apply_lora(model, patterned)
    layers = model.model.layers
    assert layers[1].self_attn.q_proj.lora_A.shape[0] == 2 and layers[1].self_attn.q_proj.scaling == 8 / 2
    assert layers[0].self_attn.q_proj.lora_A.shape[0] == 4 and layers[0].self_attn.q_proj.scaling == 8 / 4
    assert layers[0].self_attn.v_proj.scaling == 3 / 4

    rslora = save_peft_adapter(base, tmp_path / "rslora", **CASES["rslora"])
    model = load_llama(base)
    report = apply_lora(model, rslora)
    assert report["use_rslora"] is True
    assert model.model.layers[0].mlp.down_proj.scaling == 8 / 4 ** 0.5


def test_report_describes_the_adapter(tmp_path, base):
    adapter = save_peft_adapter(base, tmp_path / "adapter", **PLAIN)
    report = apply_lora(load_llama(base), adapter, merge=True)
    tensors = load_file(adapter / "adapter_model.safetensors")
    assert report["path"] == str(adapter)
    assert (report["r"], report["lora_alpha"], report["merged"]) == (4, 8, True)
    assert report["targets"]["count"] == 6  # 3 kinds of layer in each of 2 blocks
    assert report["targets"]["examples"][0] == "model.layers.0.self_attn.q_proj"
    assert report["adapter_parameters"] == sum(t.numel() for t in tensors.values())
    assert report["sha256"] == hashlib.sha256((adapter / "adapter_model.safetensors").read_bytes()).hexdigest()


def test_adapter_for_a_wider_model_is_rejected_and_the_model_left_unchanged(tmp_path, base):
    wider = save_tiny_llama(tmp_path / "wider", hidden_size=60)
    adapter = save_peft_adapter(wider, tmp_path / "adapter", **PLAIN)
    model = load_llama(base)
    before = snapshot(model)
    with pytest.raises(UserError, match=r"does not fit model\.layers\.0\.self_attn\.q_proj: lora_A \(4, 60\)"
                                        r".*\(out, in\) = \(48, 48\)"):
        apply_lora(model, adapter)
    assert_unchanged(model, before)


@pytest.mark.parametrize("layers, message", [
    (3, r"has no module model\.layers\.2\..* \(3 of the adapter's 9 layers are missing\)"),
    (1, r"selects model\.layers\.1\.self_attn\.q_proj, but the adapter has no weights for it"),
])
def test_adapter_for_a_deeper_or_shallower_model_is_rejected(tmp_path, base, layers, message):
    other = save_tiny_llama(tmp_path / "other", num_hidden_layers=layers)
    adapter = save_peft_adapter(other, tmp_path / "adapter", **PLAIN)
    model = load_llama(base)
    before = snapshot(model)
    with pytest.raises(UserError, match=message):
        apply_lora(model, adapter, merge=True)
    assert_unchanged(model, before)


def test_adapter_for_another_architecture_names_the_missing_module(tmp_path, base):
    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=101, n_embd=48, n_layer=2, n_head=4, n_positions=64)).save_pretrained(gpt2)
    adapter = save_peft_adapter(gpt2, tmp_path / "adapter", GPT2LMHeadModel, r=4, lora_alpha=8,
                                target_modules=["c_attn"], fan_in_fan_out=True)
    model = load_llama(base)
    before = snapshot(model)
    with pytest.raises(UserError, match=r"has no module transformer\.h\.0\.attn\.c_attn"):
        apply_lora(model, adapter)
    assert_unchanged(model, before)


@pytest.mark.parametrize("edit, message", [
    ({"peft_type": "IA3"}, r"peft_type is 'IA3'; only LORA"),
    ({"use_dora": True}, r"DoRA \(use_dora\) is not supported"),
    ({"bias": "all"}, r"bias='all'"),
    ({"modules_to_save": ["lm_head"]}, r"modules_to_save\) is not supported"),
    ({"init_lora_weights": "pissa"}, r"init_lora_weights='pissa'"),
    ({"target_modules": ["q_proj", "k_proj", "v_proj", "down_proj"]}, r"selects model\.layers\.0\.self_attn\.k_proj"),
    ({"rank_pattern": {"q_proj": 2}}, r"does not fit model\.layers\.0\.self_attn\.q_proj: .*\(rank 2\)"),
])
def test_configs_we_cannot_honour_are_refused(tmp_path, base, edit, message):
    adapter = save_peft_adapter(base, tmp_path / "adapter", **PLAIN)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, **edit}))
    model = load_llama(base)
    before = snapshot(model)
    with pytest.raises(UserError, match=message):
        apply_lora(model, adapter)
    assert_unchanged(model, before)


def test_unreadable_folders_are_refused(tmp_path, base):
    model = load_llama(base)
    with pytest.raises(UserError, match="has no adapter_config.json"):
        apply_lora(model, base)  # a model folder, not an adapter
    adapter = save_peft_adapter(base, tmp_path / "adapter", **PLAIN)
    weights = adapter / "adapter_model.safetensors"
    tensors = load_file(weights)
    extra = "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"  # as DoRA saves
    save_file({**tensors, extra: torch.ones(48)}, weights)
    with pytest.raises(UserError, match=f"unexpected tensor '{extra}'"):
        apply_lora(model, adapter)
    save_file({k: v for k, v in tensors.items() if "layers.1.mlp.down_proj.lora_B" not in k}, weights)
    with pytest.raises(UserError, match=r"model\.layers\.1\.mlp\.down_proj has no lora_B\.weight"):
        apply_lora(model, adapter)
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="cannot read .*adapter_model.safetensors"):
        apply_lora(model, adapter)
    weights.unlink()
    with pytest.raises(UserError, match="has no adapter_model.safetensors"):
        apply_lora(model, adapter)
    (adapter / "adapter_config.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot read .*adapter_config.json"):
        apply_lora(model, adapter)


def test_tied_lm_head_works_unmerged_and_refuses_to_merge(tmp_path):
    base = save_tiny_llama(tmp_path / "base", tie_word_embeddings=True)
    adapter = save_peft_adapter(base, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=["lm_head"])
    model = load_llama(base)
    before = snapshot(model)
    with pytest.raises(UserError, match="lm_head's weight is shared"):
        apply_lora(model, adapter, merge=True)
    assert_unchanged(model, before)
    apply_lora(model, adapter)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert (logits(model) - peft_logits(base, adapter)).abs().max().item() <= TOLERANCE

    # PEFT saves a copy of a targeted output layer's weight, and loading puts it in the model: we accept only the
    # model's own weight there.
    weights = adapter / "adapter_model.safetensors"
    tensors = load_file(weights)
    assert torch.equal(tensors["base_model.model.lm_head.base_layer.weight"], load_llama(base).lm_head.weight)
    tensors["base_model.model.lm_head.base_layer.weight"] *= 2
    save_file(tensors, weights)
    with pytest.raises(UserError, match=r"carries its own lm_head\.weight \(101, 48\), different from the model's"):
        apply_lora(load_llama(base), adapter)


def test_adapter_follows_the_model_dtype(tmp_path, base):
    adapter = save_peft_adapter(base, tmp_path / "adapter", **PLAIN)
    model = load_llama(base, dtype=torch.bfloat16)
    apply_lora(model, adapter)
    assert model.model.layers[0].self_attn.q_proj.lora_B.dtype == torch.bfloat16
    assert logits(model).dtype == torch.bfloat16


def test_parse_lora_suffix():
    assert parse_lora_suffix("adapters/run1") == (Path("adapters/run1"), False)
    assert parse_lora_suffix("adapters/run1,merge") == (Path("adapters/run1"), True)
    for bad in ("", ",merge", "adapters/run1,fuse"):
        with pytest.raises(UserError, match="malformed LoRA suffix"):
            parse_lora_suffix(bad)


def test_gpt2_adapter_with_fan_in_fan_out_matches_peft(tmp_path):
    base = tmp_path / "base"
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=101, n_embd=48, n_layer=2, n_head=4, n_positions=64)).save_pretrained(base)
    # Conv1D layers: PEFT needs fan_in_fan_out=True; "c_proj" selects both attn.c_proj and mlp.c_proj.
    adapter = save_peft_adapter(base, tmp_path / "adapter", GPT2LMHeadModel, r=4, lora_alpha=8,
                                target_modules=["c_attn", "c_proj"], fan_in_fan_out=True)
    assert json.loads((adapter / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    expected = peft_logits(base, adapter, GPT2LMHeadModel)
    base_logits = logits(gpt.load_gpt2(base))
    for merge in (False, True):
        model = gpt.load_gpt2(base)
        report = apply_lora(model, adapter, merge=merge)
        assert report["targets"]["count"] == 6  # 3 layers in each of 2 blocks
        got = logits(model)
        print(f"gpt2 merge={merge}: max |Δlogit| {(got - expected).abs().max():.2e}")
        assert (got - expected).abs().max().item() <= TOLERANCE
    assert (expected - base_logits).abs().max().item() > 100 * TOLERANCE
