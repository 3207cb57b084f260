"""oneDNN packed linear layers (harness/models/packed_linear.py): the same numbers as F.linear, up to rounding."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.models import packed_linear
from harness.models.llama import load_llama
from harness.models.packed_linear import PackedLinear, pack_linear_layers
from harness.models.registry import load_model
from tests.test_llama_reference import TINY, save_random_hf_llama
from tests.tiny import make_tiny_llama_folder

pytestmark = pytest.mark.skipif(not packed_linear.available(), reason="this torch build has no oneDNN linear")


def close(got, expected):
    # fp32 sums of up to 1,536 products taken in another order: a few units in the last place of the largest
    # terms. 2e-5 of the output's scale is well above that (3e-6 is typical) and far below any real error.
    if expected.numel() == 0:
        return got.shape == expected.shape
    scale = expected.abs().max().item() + 1e-30
    return (got - expected).abs().max().item() <= 2e-5 * scale


@pytest.mark.parametrize("rows", [0, 1, 3, 8, 1024])
@pytest.mark.parametrize("bias", [False, True])
def test_packed_linear_gives_f_linear(rows, bias):
    torch.manual_seed(rows)
    linear = nn.Linear(576, 1536, bias=bias)
    packed = PackedLinear(linear)
    x = torch.randn(rows, 576)
    with torch.no_grad():
        assert packed(x).shape == (rows, 1536)
        assert close(packed(x), F.linear(x, linear.weight, linear.bias))
        three_d = torch.randn(2, rows, 576)
        assert close(packed(three_d), F.linear(three_d, linear.weight, linear.bias))
        strided = torch.randn(rows, 1152)[:, ::2]  # a non-contiguous input, as a slice of hidden states is
        assert close(packed(strided), F.linear(strided, linear.weight, linear.bias))


def test_packed_linear_follows_its_weight_when_it_changes():
    torch.manual_seed(0)
    linear = nn.Linear(64, 32, bias=False)
    packed, x = PackedLinear(linear), torch.randn(5, 64)
    with torch.no_grad():
        before = packed(x)
        packed.weight.add_(1.0)  # in place, as merging a LoRA does
        assert close(packed(x), F.linear(x, packed.weight)) and not close(packed(x), before)
        packed.weight.data = torch.randn(32, 64)  # replaced
        assert close(packed(x), F.linear(x, packed.weight))


def test_packed_linear_falls_back_when_autograd_needs_a_graph():
    linear = nn.Linear(16, 8)
    packed, x = PackedLinear(linear), torch.randn(3, 16)
    packed(x).sum().backward()
    assert linear.weight.grad is not None and packed.weight.grad is linear.weight.grad


@pytest.mark.parametrize("tie", [True, False])
def test_packed_model_matches_transformers_and_keeps_its_parameters(tmp_path, tie):
    hf = save_random_hf_llama(tmp_path, tie)
    ours = load_llama(tmp_path)
    names_before = list(ours.state_dict())
    replaced = pack_linear_layers(ours)
    assert replaced == 7 * TINY["num_hidden_layers"] + 1  # q, k, v, o, gate, up, down per layer, and the head
    assert all(type(m) is not nn.Linear for m in ours.modules())
    assert list(ours.state_dict()) == names_before
    assert (ours.lm_head.weight is ours.model.embed_tokens.weight) == tie
    ids = torch.randint(0, TINY["vocab_size"], (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        # The same bound as the unpacked model's test against transformers: fp32 differing only in summation order.
        assert (ours(ids) - hf(ids).logits).abs().max().item() <= 1e-4


def test_load_model_packs_after_variants_and_can_be_turned_off(tmp_path, smollm2, monkeypatch):
    folder = make_tiny_llama_folder(tmp_path, smollm2.folder)
    plain = load_model(f"hf:{folder}")
    assert plain.info()["packed_linear_layers"] == 2 * 7 + 1
    # int8 replaces every linear layer but the head tied to the embedding, which is then packed.
    quantized = load_model(f"hf:{folder}:int8")
    assert quantized.info()["packed_linear_layers"] == 1
    monkeypatch.setenv("HARNESS_PACKED_LINEAR", "0")
    unpacked = load_model(f"hf:{folder}")
    assert unpacked.info()["packed_linear_layers"] == 0
    ids = torch.tensor([[1, 504, 3458, 314, 260, 2426, 28, 253]])
    with torch.no_grad():
        assert (plain.model(ids) - unpacked.model(ids)).abs().max().item() <= 1e-4
