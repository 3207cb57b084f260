"""Load-time weight quantization: round-trip error bounds, packed storage, forward passes, measured bytes and a
quantized tiny reference LLaMA. All on random weights; the real-model perplexity check is run by hand."""

import copy
import json

import pytest
import torch
from torch import nn

from harness.errors import UserError
from harness.models.llama import Llama, LlamaConfig
from harness.models.quantize import (
    SCHEMES, DynamicInt8Linear, Int4Linear, Int8Linear, int4_codes, int4_dequantize, pack_int4, parse_scheme,
    quantize, quantize_int4_groups, quantize_int8_rows, random_token_calibration, range_to_grid, unpack_int4,
)

INT4_SCHEMES = ["int4-g32", "int4-g64", "int4-g128"]


def random_weight(rows: int, columns: int, seed: int = 0) -> torch.Tensor:
    """Gaussian weights with a few outliers ten times larger, as trained layers have."""
    generator = torch.Generator().manual_seed(seed)
    w = 0.02 * torch.randn(rows, columns, generator=generator)
    outliers = torch.rand(rows, columns, generator=generator) < 0.002
    return torch.where(outliers, 10 * w, w)


def linear_with(weight: torch.Tensor, bias: bool) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias:
            layer.bias.copy_(torch.randn(weight.shape[0], generator=torch.Generator().manual_seed(9)))
    return layer


class SmolLM2Linears(nn.Module):
    """The seven linear layers of one SmolLM2-135M decoder layer (hidden 576, 3 key/value heads of 64,
    intermediate 1536)."""

    def __init__(self):
        super().__init__()
        shapes = {"q_proj": (576, 576), "k_proj": (192, 576), "v_proj": (192, 576), "o_proj": (576, 576),
                  "gate_proj": (1536, 576), "up_proj": (1536, 576), "down_proj": (576, 1536)}
        for seed, (name, shape) in enumerate(shapes.items()):
            setattr(self, name, linear_with(random_weight(*shape, seed=seed), bias=False))


# ---- scheme names ----------------------------------------------------------------------------------------------


def test_parse_scheme_names_the_choices():
    assert parse_scheme("int4-g64") == "int4-g64"
    assert parse_scheme(" INT8 ") == "int8"
    assert parse_scheme(None) is None and parse_scheme("") is None
    with pytest.raises(UserError) as error:
        parse_scheme("int3")
    assert all(name in str(error.value) for name in SCHEMES)
    with pytest.raises(UserError):
        quantize(nn.Linear(4, 4), "fp8")


def test_a_bare_linear_cannot_be_replaced_in_place_and_says_so():
    layer = nn.Linear(64, 8)
    report = quantize(layer, "int8")
    assert report["quantized_layers"] == [] and report["kept_layers"][0]["name"] == ""
    assert report["linear_bytes_after"] == 0


# ---- round trips -----------------------------------------------------------------------------------------------


def test_int8_error_is_at_most_half_a_step_per_row():
    w = random_weight(64, 300)
    w[5] = 0.0  # an all-zero row must come back exactly
    q, scale = quantize_int8_rows(w)
    assert q.dtype == torch.int8 and q.abs().max() <= 127
    assert torch.allclose(scale[:5], w[:5].abs().amax(1) / 127)
    error = (w - q.float() * scale[:, None]).abs()
    # Rounding w / scale (|w / scale| <= 127) is exact to half a step; fp32 division and product add a relative
    # 2^-24 of up to 127 steps, 1e-5 of a step is ample.
    assert (error <= scale[:, None] * (0.5 + 1e-5)).all()
    assert error[5].max() == 0


def test_pack_unpack_of_4bit_codes_is_exact():
    codes = torch.randint(0, 16, (7, 40), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    codes[0, :16] = torch.arange(16, dtype=torch.uint8)  # every value appears in both nibble positions
    codes[1, :16] = torch.arange(16, dtype=torch.uint8).flip(0)
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (7, 20)
    assert torch.equal(unpack_int4(packed), codes)


@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("weighted", [False, True])  # weighted: clipped grids are candidates too
def test_int4_error_inside_the_grid_is_at_most_half_a_step(group_size, weighted):
    w = random_weight(48, 512)
    importance = torch.rand(512, generator=torch.Generator().manual_seed(2)) ** 4 if weighted else None
    codes, scale, zero = quantize_int4_groups(w, group_size, importance)
    assert codes.dtype == torch.uint8 and codes.max() <= 15
    groups, scale, zero = w.reshape(-1, group_size), scale.reshape(-1), zero.reshape(-1)
    restored = int4_dequantize(codes.reshape(-1, group_size).float(), scale, zero)
    low, high = ((0 - zero) * scale)[:, None], ((15 - zero) * scale)[:, None]  # the grid's range
    inside = (groups >= low) & (groups <= high)
    # Nearest-code rounding inside the grid's range: half a step, plus fp32 rounding of (w / s + z) where
    # w / s + z is at most ~16 in size: 1e-5 of a step is ample.
    assert ((groups - restored).abs() <= scale[:, None] * (0.5 + 1e-5))[inside].all()
    # Not vacuous: the grid spans the group's range (or 0.9 of it), shifted by the zero fit, so only a group's
    # extreme weights fall outside it (1 to 5 % here).
    assert inside.float().mean() > 0.9


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_int4_groups_are_no_worse_than_round_to_nearest(group_size):
    w = random_weight(48, 512, seed=3)
    groups = w.reshape(-1, group_size)
    rtn_scale, rtn_zero = range_to_grid(groups.amin(1), groups.amax(1))
    rtn_error = groups - int4_dequantize(int4_codes(groups, rtn_scale, rtn_zero), rtn_scale, rtn_zero)
    codes, scale, zero = quantize_int4_groups(w, group_size)
    error = groups - int4_dequantize(codes.reshape(-1, group_size).float(), scale.reshape(-1), zero.reshape(-1))
    # By construction (round-to-nearest is the first candidate, a later one must beat it on both), exactly.
    assert ((error ** 2).sum(1) <= (rtn_error ** 2).sum(1)).all()
    assert (error.abs().pow(0.7).sum(1) <= rtn_error.abs().pow(0.7).sum(1) * (1 + 1e-6)).all()
    # And the fit does something: a fit that changed nothing would leave the layer's squared error at exactly
    # round-to-nearest's. Measured here 0.92 (g32) to 0.96 (g128) of it; on SmolLM2's weights (g64) 0.87.
    assert (error ** 2).sum() < 0.99 * (rtn_error ** 2).sum()


def test_weighted_groups_are_no_worse_than_round_to_nearest_by_the_weighted_error():
    w = random_weight(48, 512, seed=10)
    importance = torch.rand(512, generator=torch.Generator().manual_seed(11)) ** 4 * 100  # a few channels loud
    codes, scale, zero = quantize_int4_groups(w, 64, importance)
    groups = w.reshape(-1, 64)
    weighting = (importance / importance.mean()).clamp_min(0.01).expand(48, -1).reshape(-1, 64)
    rtn_scale, rtn_zero = range_to_grid(groups.amin(1), groups.amax(1))
    rtn_error = groups - int4_dequantize(int4_codes(groups, rtn_scale, rtn_zero), rtn_scale, rtn_zero)
    error = groups - int4_dequantize(codes.reshape(-1, 64).float(), scale.reshape(-1), zero.reshape(-1))
    # Exactly, by construction, as without weights; the weighting is the one the docstring defines.
    assert ((weighting * error ** 2).sum(1) <= (weighting * rtn_error ** 2).sum(1)).all()


def test_calibration_weights_the_loud_input_channels():
    """A layer whose inputs have a few channels 30 times louder than the rest (as LLM activations do): weighting
    by the calibration's mean squares must cut the output error on such inputs."""
    generator = torch.Generator().manual_seed(12)
    loudness = torch.ones(256)
    loudness[torch.randperm(256, generator=generator)[:8]] = 30.0

    def inputs(count):
        return torch.randn(count, 256, generator=generator) * loudness

    linear = linear_with(random_weight(128, 256, seed=13), bias=True)
    plain, weighted = nn.Sequential(copy.deepcopy(linear)), nn.Sequential(copy.deepcopy(linear))
    quantize(plain, "int4-g64")
    report = quantize(weighted, "int4-g64", calibrate=lambda model: model(inputs(512)))
    assert report["calibrated"] and report["quantized_layers"] == ["0"]
    x = inputs(256)
    with torch.no_grad():
        exact = linear(x)
        plain_error, weighted_error = (plain(x) - exact).norm(), (weighted(x) - exact).norm()
    # The 8 loud channels carry (8 * 900) / (8 * 900 + 248) = 97 % of the output's variance; fitting them
    # first should remove most of their error. Measured: the weighted error is 0.59 of the plain one.
    assert weighted_error < 0.75 * plain_error


def test_in_features_not_divisible_by_the_group_are_padded():
    w = random_weight(16, 576, seed=4)
    w[:8, 512:] = w[:8, 512:].abs() + 0.01  # last groups all positive: padding with zeros would widen them
    layer = Int4Linear(linear_with(w, bias=True), group_size=128)
    assert layer.packed.shape == (16, 640 // 2) and layer.scale.shape == (16, 5)  # 576 padded to 640 codes
    assert layer.dequantized_weight().shape == (16, 576)
    # The padding does not count: the last group (64 real weights) fits as well as those 64 alone, as one group.
    tail = w[:, 512:]
    codes, scale, zero = quantize_int4_groups(tail, 64)
    alone = int4_dequantize(codes.float(), scale.reshape(-1), zero.reshape(-1))
    alone_error = ((alone - tail) ** 2).sum()
    padded_error = ((layer.dequantized_weight()[:, 512:] - tail) ** 2).sum()
    # Same values, same range, same fit: equal but for the order of fp32 sums (bitwise equal when measured).
    # Counting the padding in the fit moved the error by 4 %, padding with zeros by more.
    assert padded_error == pytest.approx(alone_error.item(), rel=1e-5)


# ---- forward passes --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["int8"] + INT4_SCHEMES)
@pytest.mark.parametrize("bias", [True, False])
def test_weight_only_forward_is_the_dequantized_matmul(scheme, bias):
    linear = linear_with(random_weight(96, 320, seed=5), bias=bias)
    layer = Int8Linear(linear) if scheme == "int8" else Int4Linear(linear, int(scheme.removeprefix("int4-g")))
    x = torch.randn(3, 7, 320, generator=torch.Generator().manual_seed(6))
    weight = layer.dequantized_weight().double()
    expected = x.double() @ weight.T + (linear.bias.double() if bias else 0)
    with torch.no_grad():
        got = layer(x)
    assert got.shape == (3, 7, 96) and got.dtype == torch.float32
    # The same dequantized weight in fp32 against fp64: 320-term sums of O(0.1) products, outputs of O(1),
    # rounding errors of order 320 * 2^-24 ~ 2e-5 at the very worst, ~1e-6 typically.
    assert (got.double() - expected).abs().max() <= 2e-5


@pytest.mark.parametrize("bias", [True, False])
def test_dynamic_int8_forward(bias):
    linear = linear_with(random_weight(96, 320, seed=7), bias=bias)
    layer = DynamicInt8Linear(linear)
    x = torch.randn(3, 7, 320, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        got, exact = layer(x), linear(x)
    # Emulated in fp64: per-token symmetric int8 activations times per-channel int8 weights. The int32
    # accumulation is exact, so only the fp32 rescale differs (relative 2^-23 of O(1) outputs).
    rows = x.reshape(-1, 320).double()
    x_scale = rows.abs().amax(1, keepdim=True) / 127
    emulated = (torch.round(rows / x_scale) * x_scale) @ (layer.qweight_t.double() * layer.scale.double())
    emulated = emulated + (linear.bias.double() if bias else 0)
    assert (got.reshape(-1, 96).double() - emulated).abs().max() <= 1e-5
    # Against the float layer: each factor carries rounding noise of step / sqrt(12), about 0.6 % of the rms of
    # Gaussian activations (max ~3 sigma over 320 values) and ~1 % for the outlier-stretched weights; together
    # ~1.2 % of the output. 3 % leaves room without hiding a wrong scale (which would be off by far more).
    assert (got - exact).norm() / exact.norm() <= 0.03


# ---- whole models and measured bytes ---------------------------------------------------------------------------


@pytest.mark.parametrize("scheme, packed_bytes_per_weight, max_ratio", [
    ("int8", 1.0, 0.30), ("dynamic-int8", 1.0, 0.30), ("int4-g64", 0.5, 0.17)])
def test_measured_bytes_of_a_smollm2_shaped_layer(scheme, packed_bytes_per_weight, max_ratio):
    model = SmolLM2Linears()
    weights = sum(m.weight.numel() for m in model.children())
    report = quantize(model, scheme)
    assert report["linear_bytes_before"] == 4 * weights  # fp32 weights, no bias
    stored = [t for m in model.children() for name, t in m.named_buffers() if name in ("qweight", "qweight_t",
                                                                                     "packed")]
    assert len(stored) == 7
    assert sum(t.untyped_storage().nbytes() for t in stored) == packed_bytes_per_weight * weights
    # Per weight: int8 1 byte + a 4-byte scale per row of 576 or 1536 (ratio 0.252); int4-g64 half a byte + a
    # 4-byte scale and zero per 64 (ratio 0.156).
    assert report["linear_bytes_after"] / report["linear_bytes_before"] <= max_ratio
    assert report["model_bytes_after"] == report["linear_bytes_after"]  # nothing else in this model
    json.dumps(report)  # goes into the run record as it is


class TiedAndUntied(nn.Module):
    """An embedding tied to a linear not called lm_head, an untied lm_head, biased linears and an attention
    module whose out_proj is a subclass of nn.Linear."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 32)
        self.fc = nn.Linear(32, 64)
        self.attention = nn.MultiheadAttention(64, 4, batch_first=True)
        self.proj = nn.Linear(64, 32)
        self.decoder = nn.Linear(32, 50, bias=False)
        self.decoder.weight = self.embed.weight
        self.lm_head = nn.Linear(32, 50)

    def forward(self, ids):
        h = torch.relu(self.fc(self.embed(ids)))
        h = self.proj(h + self.attention(h, h, h, need_weights=False)[0])
        return self.decoder(h) + self.lm_head(h)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_which_layers_are_quantized_and_which_kept(scheme):
    torch.manual_seed(0)
    model = TiedAndUntied().eval()
    ids = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        before = model(ids)
    embedding = model.embed.weight
    report = quantize(model, scheme)
    assert report["quantized_layers"] == ["fc", "proj"]
    kept = {entry["name"]: entry["why"] for entry in report["kept_layers"]}
    assert set(kept) == {"attention.out_proj", "decoder", "lm_head"}
    assert "tied to an embedding" in kept["decoder"]
    assert model.embed.weight is embedding and model.decoder.weight is embedding  # still tied, still float
    assert type(model.fc) is not nn.Linear and type(model.lm_head) is nn.Linear
    assert report["model_bytes_after"] < report["model_bytes_before"]
    with torch.no_grad():
        after = model(ids)
    # A loose bound: only two small layers are quantized; int4 per-layer noise is ~7 % of the weights' rms.
    assert (after - before).norm() / before.norm() <= 0.1


TINY = dict(vocab_size=101, hidden_size=96, intermediate_size=160, num_hidden_layers=3, num_attention_heads=6,
            num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)

# Quantized logits minus float logits, as a fraction of what the decoder layers add to the logits (the float
# logits minus those of the same model with every quantized linear zeroed); the embedding's own part of the
# logits is not quantized and must not flatter the ratio. The default init draws each weight uniformly in
# +-b, the worst case for a uniform grid: per linear the rounding noise (step / sqrt(12)) is 0.39 % of the
# weights' rms for int8 (step b / 127) and 6.7 % for int4 (step 2b / 15); two linears in a row (v then o,
# gate/up then down) compound it by about sqrt 2. Measured: int8 0.6 %, dynamic-int8 1.4 % (activation noise
# too), int4 10-11 %; the bounds are about twice that.
LOGIT_BOUNDS = {"int8": 0.015, "dynamic-int8": 0.03, "int4-g32": 0.2, "int4-g64": 0.2, "int4-g128": 0.2}


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_a_quantized_tiny_llama_decodes_with_a_kv_cache(scheme):
    torch.manual_seed(0)
    model = Llama(LlamaConfig(**TINY)).eval()  # hidden 96, intermediate 160: int4-g64 and -g128 pad
    without_layers = copy.deepcopy(model)
    with torch.no_grad():
        for name, module in without_layers.named_modules():
            if isinstance(module, nn.Linear) and name != "lm_head":
                module.weight.zero_()
    ids = torch.randint(0, TINY["vocab_size"], (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        float_logits, bare_logits = model(ids), without_layers(ids)
    report = quantize(model, scheme, calibrate=random_token_calibration(TINY["vocab_size"], length=32))
    assert report["calibrated"] == scheme.startswith("int4")  # only the int4 fits use it
    assert len(report["quantized_layers"]) == 3 * 7
    assert report["kept_layers"] == [{"name": "lm_head", "why": "output head, kept in float"}]
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache()
        pieces = [model(ids[:, :10], cache=cache)] + [model(ids[:, t:t + 1], cache=cache) for t in range(10, 24)]
    incremental = torch.cat(pieces, dim=1)
    assert cache.length == 24
    # Logits here are up to ~100 (the tied N(0, 1) embedding), so fp32 summation order alone moves them by a
    # few ulps of 100 (measured 3e-5 to 5e-5), as in the float model's own cache test. dynamic-int8 quantizes
    # each token's activations alone, so the cache changes nothing more, unless summation order moves one
    # activation across a rounding boundary: one step (max|x| / 127 ~ 0.02) times a weight column (norm ~0.6)
    # reaches the logits through the embedding rows as ~0.01 each, ~0.04 at the largest of 101. A cache bug
    # (wrong positions or keys) moves them by whole units.
    tolerance = 1e-4 if scheme != "dynamic-int8" else 0.1
    assert (incremental - full).abs().max() <= tolerance
    drift = (full - float_logits).norm() / (float_logits - bare_logits).norm()
    assert drift <= LOGIT_BOUNDS[scheme]
