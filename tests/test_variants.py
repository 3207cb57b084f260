"""Model variants as a user reaches them: through the model spec (`load_model`), the run record and the CLI.

The numerics of each variant are tested in its own file (test_gpt_reference, test_quantize, test_moe, test_lora);
here: every spec form loads the right thing, the record says what was changed, and bad combinations are refused.
"""

import subprocess
import sys

import pytest
import torch

from harness.errors import UserError
from harness.models.registry import list_models, load_model
from harness.engine.requests import LoglikelihoodRequest
from tests.test_lora import save_peft_adapter, save_tiny_llama
from tests.test_moe import save_random_hf_mixtral
from tests.tiny import make_tiny_llama_folder


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, smollm2):
    return make_tiny_llama_folder(tmp_path_factory.mktemp("tiny"), smollm2.folder)


def ids_logits(adapter, ids=(1, 504, 3458, 314, 260, 2426, 28, 253)):
    with torch.no_grad():
        return adapter.model(torch.tensor([list(ids)]))


def test_list_models_shows_the_variants():
    names = [name for name, _ in list_models()]
    assert {"  :int8", "  :int4-g64", "  :dynamic-int8", "  :moe-eEkK", "  +lora=PATH[,merge]"} <= set(names)


def test_gpt2_and_mixtral_folders_load_through_hf_path(tmp_path, tiny_llama):
    from transformers import GPT2Config, GPT2LMHeadModel

    from harness.models.gpt import write_gpt2_tokenizer

    torch.manual_seed(0)  # GPT-2's real vocabulary, so that the real GPT-2 tokenizer's ids fit
    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64)).save_pretrained(tmp_path / "gpt2")
    write_gpt2_tokenizer(tmp_path / "gpt2")
    adapter = load_model(f"hf:{tmp_path / 'gpt2'}")
    assert adapter.implementation == "reference-gpt2" and adapter.max_length == 64
    (result,) = adapter.loglikelihood([LoglikelihoodRequest("Hello", " world")])
    assert result.logprob < 0

    save_random_hf_mixtral(tmp_path / "mixtral", layout="per-expert")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "mixtral" / name).write_bytes((tiny_llama / name).read_bytes())
    adapter = load_model(f"hf:{tmp_path / 'mixtral'}")
    assert adapter.implementation == "reference-mixtral"


def test_lora_spec_unmerged_and_merged_agree_and_enter_the_fingerprint(tmp_path, tiny_llama):
    adapter_folder = tmp_path / "adapter"
    save_peft_adapter(tiny_llama, adapter_folder, target_modules=["q_proj", "v_proj", "down_proj"])
    base = load_model(f"hf:{tiny_llama}")
    unmerged = load_model(f"hf:{tiny_llama}+lora={adapter_folder}")
    merged = load_model(f"hf:{tiny_llama}+lora={adapter_folder},merge")
    assert (ids_logits(unmerged) - ids_logits(merged)).abs().max() <= 1e-4
    assert (ids_logits(unmerged) - ids_logits(base)).abs().max() > 1e-2
    assert len({base.fingerprint, unmerged.fingerprint, merged.fingerprint}) == 3
    assert unmerged.info()["lora"]["merged"] is False and merged.info()["lora"]["merged"] is True


def test_moe_variant_with_every_expert_is_the_dense_model_and_reports_its_load(tiny_llama):
    dense = load_model(f"hf:{tiny_llama}")
    every = load_model(f"hf:{tiny_llama}:moe-e4k4")
    half = load_model(f"hf:{tiny_llama}:moe-e4k2")
    # fp32, logits of magnitude ~10: only the order of the expert sums changes, so rounding stays near 1e-6.
    assert (ids_logits(every) - ids_logits(dense)).abs().max() <= 1e-5
    assert (ids_logits(half) - ids_logits(dense)).abs().max() > 1e-3
    load = half.info()["variant"]["expert_load"]
    assert all(sum(layer["tokens_per_expert"]) == 8 * 2 for layer in load["layers"])
    assert half.info()["variant"]["active_parameters_per_token"] < every.info()["variant"]["total_parameters"]


def test_moe_with_an_unmerged_lora_is_refused(tmp_path, tiny_llama):
    adapter_folder = tmp_path / "adapter"
    save_peft_adapter(tiny_llama, adapter_folder, target_modules=["down_proj"])
    with pytest.raises(UserError, match="use \\+lora=PATH,merge"):
        load_model(f"hf:{tiny_llama}:moe-e2k1+lora={adapter_folder}")
    load_model(f"hf:{tiny_llama}:moe-e2k1+lora={adapter_folder},merge")


@pytest.mark.parametrize("variant", ["int8", "int4-g32", "dynamic-int8"])
def test_quantized_variants_record_what_they_changed(tiny_llama, variant):
    base = load_model(f"hf:{tiny_llama}")
    quantized = load_model(f"hf:{tiny_llama}:{variant}")
    report = quantized.info()["variant"]
    assert report["name"] == variant and report["quantized_layers"]
    assert report["linear_bytes_after"] < report["linear_bytes_before"]
    assert quantized.info()["bytes"] < base.info()["bytes"]
    assert quantized.fingerprint != base.fingerprint


@pytest.mark.slow  # a `harness run` process (about 8 s)
def test_a_mismatched_lora_through_the_cli_is_one_line(tmp_path, tiny_llama):
    other = save_tiny_llama(tmp_path / "other")  # hidden size 48, not the tiny model's 32
    adapter_folder = save_peft_adapter(other, tmp_path / "adapter", target_modules=["q_proj"])
    result = subprocess.run([sys.executable, "-m", "harness", "run", "--model",
                             f"hf:{tiny_llama}+lora={adapter_folder}", "--tasks", "wikitext", "--limit", "1",
                             "--output", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "q_proj" in result.stderr
    assert not (tmp_path / "run").exists()
