"""Model specs (`NAME[:VARIANT][+lora=PATH]`) and how each one is loaded.

    smollm2-135m          SmolLM2-135M-Instruct in the reference LLaMA (converted from the packaged GGUF)
    hf:PATH               a local Hugging Face folder (or a Hub repository id) in the reference implementation
    transformers:PATH     the same folder in Hugging Face transformers' own implementation: the peer
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.errors import UserError

NAMED_MODELS = {
    "smollm2-135m": "SmolLM2-135M-Instruct (LLaMA, 135M parameters), from the packaged GGUF or the Hub",
}
PATH_PREFIXES = {
    "hf": "a local Hugging Face folder or Hub repository id, in the reference implementation",
    "transformers": "a local Hugging Face folder in transformers' implementation (the peer)",
}
VARIANTS: dict[str, str] = {}  # quantized, MoE and LoRA variants arrive with the model-variants issue
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelSpec:
    name: str  # a named model, or "hf" / "transformers"
    path: str | None = None
    variant: str | None = None
    lora: str | None = None


def parse_spec(text: str) -> ModelSpec:
    text = text.strip()
    lora = None
    if "+lora=" in text:
        text, lora = text.split("+lora=", 1)
    prefix, _, rest = text.partition(":")
    if prefix in PATH_PREFIXES:
        if not rest:
            raise UserError(f"model spec {text!r} needs a path after '{prefix}:'")
        return ModelSpec(prefix, path=rest, lora=lora)
    if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]*(:[a-z0-9][a-z0-9\-]*)?", text):
        raise UserError(f"malformed model spec {text!r}: expected NAME[:VARIANT][+lora=PATH]")
    if prefix not in NAMED_MODELS:
        raise UserError(f"unknown model {prefix!r}; known models: {', '.join(NAMED_MODELS)}; "
                        f"or {', '.join(p + ':PATH' for p in PATH_PREFIXES)}")
    return ModelSpec(prefix, variant=rest or None, lora=lora)


def list_models() -> list[tuple[str, str]]:
    return list(NAMED_MODELS.items()) + [(p + ":PATH", d) for p, d in PATH_PREFIXES.items()]


def load_model(text: str, device: str = "cpu", dtype: str = "float32", progress=print):
    """Parses a spec and returns a loaded ModelAdapter."""
    from harness.models import sources
    from harness.models.reference import ReferenceAdapter
    from harness.models.transformers_peer import TransformersAdapter

    spec = parse_spec(text)
    if spec.variant is not None:
        raise UserError(f"unknown variant {spec.variant!r} of {spec.name}; "
                        f"known variants: {', '.join(VARIANTS) or 'none yet'}")
    if spec.lora is not None:
        raise UserError("LoRA adapters (+lora=PATH) are not supported yet")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was given but no CUDA GPU is available here; use --device cpu")
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    torch_dtype = DTYPES[dtype]

    if spec.name == "transformers":
        folder = Path(spec.path).expanduser()
        if not folder.is_dir():
            raise UserError(f"transformers:PATH needs a local model folder; {spec.path!r} is not one")
        return TransformersAdapter(text, folder, device, torch_dtype)
    if spec.name == "smollm2-135m":
        folder = sources.smollm2_folder(progress)
    else:  # hf:PATH, a local folder or else a Hub repository id
        folder = Path(spec.path).expanduser()
        if not folder.exists():
            folder = sources.hub_folder(spec.path)
    recorded = sources.recorded_fingerprint(folder)  # converted folders know their weights' sha256
    return ReferenceAdapter(text, folder, device, torch_dtype, weights_sha256=recorded)
