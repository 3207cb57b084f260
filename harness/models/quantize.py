"""Weight quantization applied at load time: every nn.Linear of a loaded model becomes a quantized layer.

`quantize(model, scheme, calibrate)` replaces, in place, each plain `nn.Linear` of any torch module (with or
without bias) by a layer that stores its weight in 8 or 4 bits, and returns a report for the run record. The
optional `calibrate(model)` runs the float model on some input (random_token_calibration: random token ids, no
data set needed); the int4 schemes then weight each input channel's rounding error by the mean square of what
the layer saw there, which is what keeps SmolLM2 within +15 % perplexity at int4-g64. Kept in float: the
output head (`lm_head`), any linear layer whose weight is tied to an embedding, and subclasses of nn.Linear
(their owners may read `.weight` directly, as nn.MultiheadAttention does). Embeddings and norms are untouched.
Quantized layers hold buffers only (no parameters): they are for inference.

Schemes (the model spec's variant names, SCHEMES below):
  int8          weight-only, per output channel, symmetric: scale = max|w_row| / 127, q in -127..127.
  int4-gG       weight-only, G in 32, 64, 128: groups of G consecutive input weights of a row share a scale and
                a (float) zero point, w ~ (q - zero) * scale with q in 0..15, two codes packed per byte. The
                grid is chosen per group: a clip ratio of the group's range, the zero point fitted as HQQ
                does, all by calibration-weighted error (quantize_int4_groups).
                When in_features is not a multiple of G the row is PADDED to the next multiple: the padding
                copies the row's last weight (so it leaves the last group's min and max alone), counts nothing
                in any error or fit, and is stored packed like the rest (in_features 576 with G 128 stores 640
                codes a row); the forward pass drops it again.
  dynamic-int8  int8 weights as in int8, and activations quantized at run time per token (per row of the
                input), symmetric int8; the product runs in PyTorch's int8 x int8 -> int32 CPU kernel
                (torch._int_mm) and is rescaled by the two scales. CPU only.

The report's byte counts are measured on the tensors themselves (untyped_storage().nbytes(), each storage counted
once, so a tied embedding counts once), never computed from a formula.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import UserError

SCHEMES = {
    "int8": "weight-only int8, one symmetric scale per output channel",
    "int4-g32": "weight-only int4, a scale and zero point per 32 input weights (calibrated HQQ fit), 2 a byte",
    "int4-g64": "weight-only int4, a scale and zero point per 64 input weights (calibrated HQQ fit), 2 a byte",
    "int4-g128": "weight-only int4, a scale and zero point per 128 input weights (calibrated HQQ fit), 2 a byte",
    "dynamic-int8": "int8 weights (per channel) and int8 activations (per token) in PyTorch's CPU int8 matmul",
}

# The int4 grid search (quantize_int4_groups): HQQ's zero-point optimisation with the paper's defaults (the l_p
# norm of the error with p = 0.7, beta 10 growing by 1.01 a step, 20 steps), from each clip ratio of the group's
# range. Measured on SmolLM2-135M int4-g64, WikiText-2 word perplexity of the first 3 articles (fp32 31.08):
#   calibrated (2 x 1024 random tokens), ratios 1 and 0.9: +9.9 %; ratio 1 only: +13.5 % (half the time);
#   the same with weighted squared error in place of l_0.7: +14.7 %;
#   uncalibrated, ratio 1 only: +32.2 %; ratios 1 and 0.9: +34.9 %; round-to-nearest: +45.3 %.
# Clipping pays only when the error is weighted by calibration, so without it only ratio 1 is tried.
INT4_CLIP_RATIOS = (1.0, 0.9)
HQQ_P = 0.7
HQQ_BETA = 10.0
HQQ_KAPPA = 1.01
HQQ_STEPS = 20

Calibrate = Callable[[nn.Module], Any]


def parse_scheme(text: str | None) -> str | None:
    """The scheme name for a model spec's variant, None for no variant; an unknown name is a UserError."""
    if text is None or not text.strip():
        return None
    name = text.strip().lower()
    if name not in SCHEMES:
        raise UserError(f"unknown quantization variant {text!r}; choose from {', '.join(SCHEMES)}")
    return name


def quantize(model: nn.Module, scheme: str, calibrate: Calibrate | None = None) -> dict:
    """Replaces the model's nn.Linear layers by quantized ones, in place, and returns the report:
    {"scheme", "calibrated" (whether the int4 fits were weighted by measured inputs), "quantized_layers": [name],
     "kept_layers": [{"name", "why"}], "linear_bytes_before", "linear_bytes_after" (both over the quantized
     layers only), "model_bytes_before", "model_bytes_after"}."""
    name = parse_scheme(scheme)
    if name is None:
        raise UserError("quantize() needs a scheme: " + ", ".join(SCHEMES))
    embedding_storages = {storage_key(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    targets: dict[int, tuple[str, nn.Linear]] = {}
    kept = []
    for layer_name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if not layer_name:
            kept.append({"name": "", "why": "the model itself is the linear layer; it cannot be replaced in place"})
        elif layer_name.split(".")[-1] == "lm_head":
            kept.append({"name": layer_name, "why": "output head, kept in float"})
        elif storage_key(module.weight) in embedding_storages:
            kept.append({"name": layer_name, "why": "weight tied to an embedding, which stays in float"})
        elif type(module) is not nn.Linear:
            kept.append({"name": layer_name, "why": f"{type(module).__name__} subclasses nn.Linear; its owner "
                                                    "may use the float weight directly"})
        elif name == "dynamic-int8" and module.weight.device.type != "cpu":
            raise UserError("dynamic-int8 runs in PyTorch's CPU int8 kernel; load the model with --device cpu")
        else:
            targets[id(module)] = (layer_name, module)

    calibrated = calibrate is not None and name.startswith("int4")
    importance = input_mean_squares(model, [m for _, m in targets.values()], calibrate) if calibrated else {}
    model_bytes_before = storage_bytes(module_tensors(model))
    linear_bytes_before = storage_bytes(t for _, m in targets.values() for t in module_tensors(m))
    with torch.no_grad():
        replacements = {key: quantized_layer(module, name, importance.get(key)) for key, (_, module) in
                        targets.items()}
    # Swap by identity in every parent, so a layer reachable under two names is replaced everywhere.
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if id(child) in replacements:
                setattr(parent, child_name, replacements[id(child)])
    return {
        "scheme": name,
        "calibrated": calibrated,
        "quantized_layers": [layer_name for layer_name, _ in targets.values()],
        "kept_layers": kept,
        "linear_bytes_before": linear_bytes_before,
        "linear_bytes_after": storage_bytes(t for layer in replacements.values() for t in module_tensors(layer)),
        "model_bytes_before": model_bytes_before,
        "model_bytes_after": storage_bytes(module_tensors(model)),
    }


def quantized_layer(linear: nn.Linear, scheme: str, importance: torch.Tensor | None = None) -> nn.Module:
    if scheme == "int8":
        return Int8Linear(linear)
    if scheme == "dynamic-int8":
        return DynamicInt8Linear(linear)
    return Int4Linear(linear, int(scheme.removeprefix("int4-g")), importance)


# ---- calibration -----------------------------------------------------------------------------------------------


def random_token_calibration(vocab_size: int, sequences: int = 2, length: int = 1024, seed: int = 0) -> Calibrate:
    """A calibrate(model) that runs model(ids) on `sequences` rows of uniformly random token ids, one at a time.

    No data set is needed and none can leak into an evaluation: what the weighting needs is which input channels
    carry large values, and in these models that comes from the weights (norm gains, outlier channels), not the
    text. Measured on SmolLM2 int4-g64 (clip ratio 1 only): WikiText articles 10-12 as calibration gave
    +12.9 % word perplexity on articles 0-2, random tokens +13.5 %, 4 x 512 random tokens +13.6 %. Rows no
    longer than `length` suit models with learned positions (GPT-2: 1024)."""
    ids = torch.randint(0, vocab_size, (sequences, length), generator=torch.Generator().manual_seed(seed))

    def calibrate(model: nn.Module) -> None:
        device = next(model.parameters()).device
        with torch.no_grad():
            for row in ids:
                model(row[None].to(device))

    return calibrate


def input_mean_squares(model: nn.Module, layers: list[nn.Module], calibrate: Calibrate) -> dict[int, torch.Tensor]:
    """Per layer (by id), the mean over calibration tokens of each input channel's square. Layers the calibration
    never reached are left out (they are quantized unweighted)."""
    sums: dict[int, torch.Tensor] = {}
    tokens: dict[int, int] = {}

    def record(layer: nn.Module, args: tuple) -> None:
        x = args[0].detach().reshape(-1, layer.in_features).float()
        sums[id(layer)] = sums.get(id(layer), 0) + (x * x).sum(dim=0)
        tokens[id(layer)] = tokens.get(id(layer), 0) + x.shape[0]

    hooks = [layer.register_forward_pre_hook(record) for layer in layers]
    try:
        calibrate(model)
    finally:
        for hook in hooks:
            hook.remove()
    return {key: sums[key] / tokens[key] for key in sums}


# ---- measuring bytes -------------------------------------------------------------------------------------------


def storage_key(tensor: torch.Tensor) -> tuple[str, int]:
    return str(tensor.device), tensor.untyped_storage().data_ptr()


def module_tensors(module: nn.Module) -> list[torch.Tensor]:
    return list(module.parameters()) + list(module.buffers())


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the storages behind the tensors, each storage once (tied weights, views)."""
    seen, total = set(), 0
    for tensor in tensors:
        key = storage_key(tensor)
        if key not in seen:
            seen.add(key)
            total += tensor.untyped_storage().nbytes()
    return total


def _bias_buffer(linear: nn.Linear) -> torch.Tensor | None:
    return None if linear.bias is None else linear.bias.detach().clone()


# ---- int8 per output channel -----------------------------------------------------------------------------------


def quantize_int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8 of the weight's shape, scale float32 per row): w ~ q * scale, scale = max|w_row| / 127."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1) / 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row: any scale is exact
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


class Int8Linear(nn.Module):
    """y = x @ (q * scale).T + bias. The float weight is rebuilt for each call and dropped after it: measured
    here (1 thread, 2048 x 576 @ 576 x 1536), rebuild + F.linear takes 34 ms against fp32's 36 ms, while
    torch._weight_int8pack_mm took 1232 ms (and 0.57 against 0.15 ms for a single token)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        qweight, scale = quantize_int8_rows(linear.weight)
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", _bias_buffer(linear))

    def dequantized_weight(self) -> torch.Tensor:
        return self.qweight.float() * self.scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized_weight().to(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


# ---- int8 weights and activations (dynamic) -------------------------------------------------------------------


class DynamicInt8Linear(nn.Module):
    """Per-token symmetric int8 activations times per-channel int8 weights, accumulated in int32 by
    torch._int_mm; per-token scales are the vector-wise scheme of LLM.int8() (Dettmers et al. 2022) without its
    outlier decomposition. The weight is stored transposed, (in_features, out_features): _int_mm reads that
    layout twice as fast (3.5 against 6.8 ms for 2048 tokens, 576 -> 1536).

    Chosen over torch.ao's quantize_dynamic, which still runs in torch 2.13 but warns that it is deprecated,
    hides the weight in an opaque packed object whose bytes cannot be measured, and quantizes activations per
    tensor to 7 bits: measured on SmolLM2-135M (token perplexity of WikiText's first 1024 tokens) it costs
    +163 % even with per-channel weights, against +3.4 % here. It was faster (7.6 against 15.9 ms, 2048 tokens).
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        qweight, scale = quantize_int8_rows(linear.weight)
        self.register_buffer("qweight_t", qweight.T.contiguous())
        self.register_buffer("scale", scale)
        self.register_buffer("bias", _bias_buffer(linear))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).float()
        x_scale = rows.abs().amax(dim=1, keepdim=True) / 127
        x_scale = torch.where(x_scale > 0, x_scale, torch.ones_like(x_scale))
        x_q = torch.round(rows / x_scale).clamp(-127, 127).to(torch.int8)
        y = torch._int_mm(x_q, self.qweight_t).float() * x_scale * self.scale
        if self.bias is not None:
            y = y + self.bias.float()
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


# ---- int4 group-wise -------------------------------------------------------------------------------------------


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Codes 0..15 (rows, even columns) -> uint8 (rows, columns / 2): column 2j in the low nibble, 2j+1 high."""
    codes = codes.to(torch.uint8)
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    return torch.stack([packed & 15, packed >> 4], dim=-1).reshape(packed.shape[0], -1)


def int4_codes(groups: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """Nearest codes for fixed scales and zero points: the best assignment for that grid."""
    return torch.round(groups / scale[:, None] + zero[:, None]).clamp(0, 15)


def int4_dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return (codes - zero[:, None]) * scale[:, None]


def range_to_grid(low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that put code 0 on `low` and code 15 on `high`: round-to-nearest's grid."""
    scale = (high - low) / 15
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # a constant group: code 0 is exact
    return scale, -low / scale


def quantize_int4_groups(weight: torch.Tensor, group_size: int, importance: torch.Tensor | None = None):
    """(codes uint8 (out, padded_in) in 0..15, scale and zero float32 (out, groups)): w ~ (q - zero) * scale.

    `importance` (in_features,), when given, weights each input column's error: the mean square of the layer's
    inputs in that channel, so that sum_j importance_j * dw_j^2 estimates the output's squared error. That is
    the diagonal of GPTQ's Hessian X X^T (Frantar et al. 2022), the weighting llama.cpp's importance matrix
    (imatrix) applies; AWQ (Lin et al. 2023) shows why the few loud input channels matter most. Without it
    every weight counts alike.

    For each clip ratio r in INT4_CLIP_RATIOS (only the first, 1, without importance) the grid spans
    [r * min, r * max] of the group, and its zero point
    is optimised as HQQ does (Badri & Shaji 2023, "Half-Quadratic Quantization"): minimise the weighted l_p
    error sum importance * |w - dequant(w)|^p, p < 1, by half-quadratic splitting, alternating
        e    = shrink_p(w - dequant(w), beta)        the error set aside as outliers
        zero = weighted mean(q - (w - e) / scale)    the zero point that fits the rest
    with beta growing by HQQ_KAPPA each step. Each group keeps the best (scale, zero) seen by weighted l_p error
    among those whose weighted squared error is no worse than round-to-nearest's (the very first candidate, full
    range and zero untouched), so no group ends worse than round-to-nearest by either measure. All groups of the
    layer are optimised at once.
    """
    out_features, in_features = weight.shape
    padding = (-in_features) % group_size
    w = weight.detach().float()
    column_weight = torch.ones(in_features, device=w.device)
    if importance is not None and importance.mean() > 0:
        # Mean 1; a channel the calibration never lit still counts a little, so no group weighs nothing.
        column_weight = (importance.float() / importance.mean()).clamp_min(0.01).to(w.device)
    # The padding copies the row's last weight (leaving the group's min and max alone) and weighs nothing.
    w = torch.cat([w, w[:, -1:].expand(out_features, padding)], dim=1)
    weighting = torch.cat([column_weight, torch.zeros(padding, device=w.device)]).expand(out_features, -1)
    groups, weighting = w.reshape(-1, group_size), weighting.reshape(-1, group_size)
    weighting_sum = weighting.sum(dim=1)
    low, high = groups.amin(dim=1), groups.amax(dim=1)
    best_lp = best_scale = best_zero = rtn_squared = None
    for ratio in INT4_CLIP_RATIOS if importance is not None else INT4_CLIP_RATIOS[:1]:
        scale, zero = range_to_grid(low * ratio, high * ratio)
        beta = HQQ_BETA
        for _ in range(HQQ_STEPS):
            codes = int4_codes(groups, scale, zero)
            residual = groups - int4_dequantize(codes, scale, zero)
            size = residual.abs()
            size_p_minus_1 = size.clamp_min(1e-12).pow(HQQ_P - 1)  # |r|^(p-1) serves the error and the shrink
            lp = (weighting * size * size_p_minus_1).sum(dim=1)
            squared = (weighting * residual * residual).sum(dim=1)
            if best_lp is None:
                best_lp, best_scale, best_zero, rtn_squared = lp, scale, zero, squared
            better = (lp < best_lp) & (squared <= rtn_squared)
            best_lp = torch.where(better, lp, best_lp)
            best_scale, best_zero = torch.where(better, scale, best_scale), torch.where(better, zero, best_zero)
            # Generalised soft-thresholding, the proximal step of |.|^p: sign(r) * max(|r| - |r|^(p-1)/beta, 0).
            outliers = residual.sign() * torch.relu(size - size_p_minus_1 / beta)
            zero = (weighting * (codes - (groups - outliers) / scale[:, None])).sum(dim=1) / weighting_sum
            beta *= HQQ_KAPPA
    codes = int4_codes(groups, best_scale, best_zero).to(torch.uint8)
    return (codes.reshape(out_features, -1), best_scale.reshape(out_features, -1),
            best_zero.reshape(out_features, -1))


class Int4Linear(nn.Module):
    """y = x @ dequant(W).T + bias, W stored as packed 4-bit codes with a float32 scale and zero per group. The
    float weight is rebuilt for each call and dropped after it: memory is the point of this scheme."""

    def __init__(self, linear: nn.Linear, group_size: int, importance: torch.Tensor | None = None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.group_size = group_size
        codes, scale, zero = quantize_int4_groups(linear.weight, group_size, importance)
        self.register_buffer("packed", pack_int4(codes))
        self.register_buffer("scale", scale)
        self.register_buffer("zero", zero)
        self.register_buffer("bias", _bias_buffer(linear))

    def dequantized_weight(self) -> torch.Tensor:
        groups = unpack_int4(self.packed).reshape(-1, self.group_size).float()
        w = int4_dequantize(groups, self.scale.reshape(-1), self.zero.reshape(-1))
        return w.reshape(self.out_features, -1)[:, :self.in_features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized_weight().to(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"group_size={self.group_size}, bias={self.bias is not None}")
