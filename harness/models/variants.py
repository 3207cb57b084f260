"""Variant families: the changes a model spec's `:VARIANT` makes to a reference model once it has loaded.

One entry of VARIANT_FAMILIES says everything about a family: the names `harness list models` shows, whether a
spec's text is one of its variants, the one-line UserError for one that cannot be, how to apply it to the loaded
model (the report for the run record) and what it adds to the record at the end of a run. The spec parser
(registry.py) and the reference adapter (reference.py) only loop over the table, so a new family is one entry here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from harness.errors import UserError
from harness.models.moe import expert_load, moefy
from harness.models.quantize import SCHEMES, quantize, random_token_calibration


@dataclass(frozen=True)
class VariantFamily:
    listed: dict[str, str]  # the names `harness list models` shows, with what each does
    matches: Callable[[str], bool]  # whether a spec's variant text is one of this family's
    check: Callable[[str], None]  # raises a one-line UserError for a matching variant that cannot be applied
    # (model, variant, the changes applied before it, by kind) -> the report for the run record; in place.
    apply: Callable[[nn.Module, str, dict[str, dict]], dict]
    # What the variant adds to the run record's report as the run ends (counted while the model ran), if anything.
    after_run: Callable[[nn.Module], dict] | None = None


# --- Quantization: :int8, :int4-gG, :dynamic-int8 (harness/models/quantize.py) --------------------------------


def apply_quantization(model: nn.Module, variant: str, earlier: dict[str, dict]) -> dict:
    # int4 fits weigh each input channel by its measured mean square, from random tokens (no data needed).
    length = min(1024, model.config.max_position_embeddings)
    calibrate = random_token_calibration(model.config.vocab_size, length=length)
    return quantize(model, variant, calibrate=calibrate)


QUANTIZATION = VariantFamily(
    listed=SCHEMES,
    matches=lambda text: text in SCHEMES,
    check=lambda variant: None,  # every scheme applies to every reference model
    apply=apply_quantization,
)


# --- Mixture of experts: :moe-eEkK (harness/models/moe.py) ----------------------------------------------------

MOE_VARIANT = re.compile(r"moe-e(\d+)k(\d+)")


def moe_sizes(variant: str) -> tuple[int, int]:
    """(E experts, K per token) of a moe-eEkK variant."""
    match = MOE_VARIANT.fullmatch(variant)
    return int(match.group(1)), int(match.group(2))


def check_moe(variant: str) -> None:
    experts, top_k = moe_sizes(variant)
    if not 1 <= top_k <= experts:
        raise UserError(f"variant {variant!r}: need 1 <= K <= E experts")


def apply_moe(model: nn.Module, variant: str, earlier: dict[str, dict]) -> dict:
    if "lora" in earlier and not earlier["lora"]["merged"]:
        raise UserError(f":{variant} splits the MLP weights into experts; an unmerged LoRA would be lost "
                        "there: use +lora=PATH,merge")
    experts, top_k = moe_sizes(variant)
    return moefy(model, experts=experts, top_k=top_k)


MIXTURE_OF_EXPERTS = VariantFamily(
    listed={"moe-eEkK": "each MLP split into E experts whose sum is the dense MLP; a router runs the top K per "
                        "token (e.g. moe-e8k2)"},
    matches=lambda text: MOE_VARIANT.fullmatch(text) is not None,
    check=check_moe,
    apply=apply_moe,
    after_run=lambda model: {"expert_load": expert_load(model)},
)


# --- Layer truncation: :layers-N, a cheap draft for speculative decoding ------------------------------------------

LAYERS_VARIANT = re.compile(r"layers-(\d+)")


def layers_kept(variant: str) -> int:
    """N of a layers-N variant."""
    return int(LAYERS_VARIANT.fullmatch(variant).group(1))


def check_layers(variant: str) -> None:
    if layers_kept(variant) < 1:
        raise UserError(f"variant {variant!r}: keep at least 1 layer")


def truncate_layers(model: nn.Module, variant: str, earlier: dict[str, dict]) -> dict:
    """Keeps the first N decoder layers; the final norm and the head read the N-th layer's output, untrained for
    it (an early exit). Its answers are a draft's, not the model's: it is for proposing tokens that the whole model
    verifies (harness/models/speculation.py), where a quantized copy is no cheaper on a CPU."""
    keep = layers_kept(variant)
    total = model.config.num_hidden_layers
    if keep >= total:
        raise UserError(f"variant {variant!r}: the model has {total} layers; keep fewer")
    (layers,) = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == total]
    del layers[keep:]
    # The config field the model's cache and loops count layers by (GPT-2 names it n_layer).
    setattr(model.config, "n_layer" if hasattr(model.config, "n_layer") else "num_hidden_layers", keep)
    return {"layers_kept": keep, "layers_of_model": total,
            "total_parameters": sum(p.numel() for p in model.parameters())}


LAYER_TRUNCATION = VariantFamily(
    listed={"layers-N": "only the first N decoder layers, an untrained early exit: a cheap draft model for "
                        "--speculative draft=... (e.g. layers-8)"},
    matches=lambda text: LAYERS_VARIANT.fullmatch(text) is not None,
    check=check_layers,
    apply=truncate_layers,
)


VARIANT_FAMILIES = (QUANTIZATION, MIXTURE_OF_EXPERTS, LAYER_TRUNCATION)  # in the order `harness list models` shows them
LISTED_VARIANTS = {name: description for family in VARIANT_FAMILIES for name, description in family.listed.items()}


def family_of(variant: str) -> VariantFamily | None:
    return next((family for family in VARIANT_FAMILIES if family.matches(variant)), None)


def is_variant_shaped(text: str) -> bool:
    """Whether text after a spec's last colon is meant as a variant (a path may hold a colon too)."""
    return text in LISTED_VARIANTS or family_of(text) is not None


def check_variant(variant: str) -> VariantFamily:
    """The family of `variant`, after its check; a one-line UserError for an unknown or impossible variant."""
    family = family_of(variant)
    if family is None:
        raise UserError(f"unknown variant {variant!r}; known variants: {', '.join(LISTED_VARIANTS)}")
    family.check(variant)
    return family
