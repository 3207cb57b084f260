"""Model specs (`NAME[:VARIANT][+lora=PATH[,merge]]`) and how each one is loaded.

    smollm2-135m          SmolLM2-135M-Instruct in the reference LLaMA (converted from the packaged GGUF)
    gemma3-270m           Gemma 3 270M in the reference Gemma 3 (converted from the packaged GGUF; Gemma licence)
    hf:PATH               a local Hugging Face folder (or a Hub repository id) in our reference implementation of
                          its model_type (llama, gpt2, mixtral, gemma3_text); `hf:PATH:VARIANT` adds a variant
    transformers:PATH     the same folder in Hugging Face transformers' own implementation: the peer
    openai:MODEL@URL      MODEL behind an OpenAI-compatible server at URL (http://HOST:PORT/v1): vLLM, TGI,
                          `harness serve`

Variants change a reference model after it loads (quantization, a mixture-of-experts split); `+lora=PATH` first
applies a PEFT LoRA adapter, kept separate or, with `,merge`, merged into the weights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.errors import UserError
from harness.models import sources
from harness.models.lora import parse_lora_suffix
from harness.models.openai_api import OpenAIAdapter
from harness.models.reference import ReferenceAdapter
from harness.models.speculation import Speculation, parse_speculation
from harness.models.transformers_peer import TransformersAdapter
from harness.models.variants import LISTED_VARIANTS, check_variant, is_variant_shaped
from harness.systems.profiler import Profiler

NAMED_MODELS = {
    "smollm2-135m": "SmolLM2-135M-Instruct (LLaMA, 135M parameters), from the packaged GGUF or the Hub",
    "gemma3-270m": "Gemma 3 270M base (Gemma 3, 268M parameters), from the packaged GGUF; Gemma licence terms",
}
# Where each named model's converted folder comes from: (progress) -> folder, converting on first use.
NAMED_FOLDERS = {"smollm2-135m": sources.smollm2_folder, "gemma3-270m": sources.gemma3_folder}
PATH_PREFIXES = {
    "hf": "a local Hugging Face folder or Hub repository id, in the reference implementation",
    "transformers": "a local Hugging Face folder in transformers' implementation (the peer)",
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelSpec:
    name: str  # a named model, or "hf" / "transformers"
    path: str | None = None
    variant: str | None = None
    lora: str | None = None
    lora_merge: bool = False
    served_model: str | None = None  # openai:MODEL@URL: MODEL (and `path` is URL)


def parse_spec(text: str) -> ModelSpec:
    text = text.strip()
    lora, merge = None, False
    if "+lora=" in text:
        text, suffix = text.split("+lora=", 1)
        lora, merge = parse_lora_suffix(suffix)
        lora = str(lora)
    prefix, _, rest = text.partition(":")
    if prefix == "openai":
        served, at, url = rest.rpartition("@")
        if not at or not served or not url.startswith(("http://", "https://")):
            raise UserError(f"malformed model spec {text!r}: expected openai:MODEL@http://HOST:PORT/v1")
        if lora is not None:
            raise UserError("+lora applies to our reference models, not to a model behind a server")
        return ModelSpec("openai", path=url, served_model=served)
    if prefix in PATH_PREFIXES:
        path, _, variant = rest.rpartition(":")
        if not path or not is_variant_shaped(variant):  # a path may hold a colon; a variant has a known shape
            path, variant = rest, ""
        if not path:
            raise UserError(f"model spec {text!r} needs a path after '{prefix}:'")
        spec = ModelSpec(prefix, path=path, variant=variant or None, lora=lora, lora_merge=merge)
    else:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]*(:[a-z0-9][a-z0-9\-]*)?", text):
            raise UserError(f"malformed model spec {text!r}: expected NAME[:VARIANT][+lora=PATH]")
        if prefix not in NAMED_MODELS:
            raise UserError(f"unknown model {prefix!r}; known models: {', '.join(NAMED_MODELS)}; "
                            f"or {', '.join(p + ':PATH' for p in PATH_PREFIXES)}")
        spec = ModelSpec(prefix, variant=rest or None, lora=lora, lora_merge=merge)
    if spec.variant is not None:
        check_variant(spec.variant)
        if spec.name == "transformers":
            raise UserError("variants apply to our reference models; transformers:PATH is the unmodified peer")
    if spec.lora is not None and spec.name == "transformers":
        raise UserError("+lora applies to our reference models; transformers:PATH is the unmodified peer")
    return spec


def list_models() -> list[tuple[str, str]]:
    rows = list(NAMED_MODELS.items()) + [(p + ":PATH", d) for p, d in PATH_PREFIXES.items()]
    rows += [("openai:MODEL@URL", "MODEL behind an OpenAI-compatible server (vLLM, TGI, harness serve)")]
    rows += [(f"  :{variant}", description) for variant, description in LISTED_VARIANTS.items()]
    return rows + [("  +lora=PATH[,merge]", "a PEFT LoRA adapter, kept separate or merged into the weights")]


def check_decoding(text: str, speculative: str | None, kv_cache: bool) -> Speculation | None:
    """The speculation a run asks for, checked against the model spec before anything loads: only our reference
    engine verifies drafts (a server or transformers' implementation cannot), and a draft model must run here."""
    spec = parse_spec(text)
    if not kv_cache and spec.name in ("openai", "transformers"):
        raise UserError(f"--no-kv-cache applies to our reference models; {spec.name}: decodes its own way")
    if speculative is None:
        return None
    speculation = parse_speculation(speculative)
    if spec.name in ("openai", "transformers"):
        raise UserError(f"--speculative needs a model our reference engine runs, which verifies the drafts; "
                        f"{spec.name}: models cannot")
    if not kv_cache:
        raise UserError("--speculative verifies drafts against the KV cache: it cannot run with --no-kv-cache")
    if speculation.draft is not None and parse_spec(speculation.draft).name in ("openai", "transformers"):
        raise UserError(f"--speculative draft={speculation.draft}: a draft model must be one of our reference "
                        "models, run here beside the target")
    return speculation


def load_model(text: str, device: str = "cpu", dtype: str = "float32", max_length: int | None = None,
               revision: str | None = None, progress=print, profiler: Profiler | None = None,
               speculative: str | None = None, kv_cache: bool = True):
    """Parses a spec and returns a loaded ModelAdapter; `profiler`, when given, times its batches (not an
    openai: model's, which runs elsewhere); `max_length`, when given, shortens the model's window; `revision`
    names what an openai: server runs (a local model's files are hashed instead); `speculative` (harness/models/
    speculation.py) and `kv_cache` say how a reference model generates."""
    speculation = check_decoding(text, speculative, kv_cache)
    spec = parse_spec(text)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was given but no CUDA GPU is available here; use --device cpu")
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    torch_dtype = DTYPES[dtype]

    if spec.name == "openai":
        if max_length is not None:
            raise UserError("--max-length applies to models that run here; an openai: server keeps its own window")
        return OpenAIAdapter(text, spec.served_model, spec.path, revision=revision, progress=progress)
    if revision is not None:
        raise UserError("--revision applies to openai: models; a local model is identified by its files' hashes")
    if spec.name == "transformers":
        folder = Path(spec.path).expanduser()
        if not folder.is_dir():
            raise UserError(f"transformers:PATH needs a local model folder; {spec.path!r} is not one")
        peer = TransformersAdapter(text, folder, device, torch_dtype, profiler=profiler)
        peer.shorten_window(max_length)
        return peer
    if spec.name in NAMED_FOLDERS:
        folder = NAMED_FOLDERS[spec.name](progress)
    else:  # hf:PATH, a local folder or else a Hub repository id
        folder = Path(spec.path).expanduser()
        if not folder.exists():
            folder = sources.hub_folder(spec.path)
        elif folder.is_file() and folder.suffix == ".gguf":
            folder = sources.gguf_folder(folder, progress)
        elif folder.is_file():
            raise UserError(f"hf:PATH takes a model folder or a .gguf file; {folder} is neither")
    adapter = ReferenceAdapter(text, folder, device, torch_dtype, profiler=profiler)
    adapter.shorten_window(max_length)
    if spec.lora is not None:
        adapter.apply_lora(Path(spec.lora).expanduser(), merge=spec.lora_merge)
    if spec.variant is not None:
        adapter.apply_variant(spec.variant)
    adapter.pack_linear_layers()
    adapter.kv_cache = kv_cache
    if speculation is not None:
        draft = None
        if speculation.draft is not None:
            try:  # the draft reads the target's contexts: it needs the target's window at least
                draft = load_model(speculation.draft, device=device, dtype=dtype, max_length=adapter.max_length,
                                   progress=progress)
            except UserError as error:
                raise UserError(f"--speculative draft={speculation.draft}: {error}") from None
        adapter.speculate(speculation, draft)
    return adapter
