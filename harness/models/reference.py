"""Adapter over our own reference implementations (LLaMA, GPT-2, Mixtral, Gemma 3) loaded from a local folder, with the
variants a spec may add: a LoRA adapter (+lora=PATH), quantization (:int8, :int4-gG, :dynamic-int8) or a
mixture-of-experts split (:moe-eEkK). Each change is described in the run record and enters the fingerprint, so
that a variant's numbers are never taken for the base model's."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch

from harness.errors import UserError
from harness.models.adapter import Generation, ModelAdapter
from harness.models.attention import ReferenceModel
from harness.models.gemma3 import load_gemma3
from harness.models.generation import ContinuousBatcher
from harness.models.gpt import load_gpt2
from harness.models.llama import load_llama
from harness.models.lora import apply_lora
from harness.models.mixtral import load_mixtral
from harness.models.packed_linear import pack_linear_layers
from harness.models.scoring import Scorer
from harness.models.speculation import Speculation
from harness.models.speculators import DraftModel, PromptLookup, check_draft
from harness.models.tokenizer import load_tokenizer
from harness.models.variants import check_variant, family_of
from harness.systems.profiler import Profiler

# The loader of each config.json model_type: (folder, dtype=, device=) -> the model, a ReferenceModel.
LOADERS: dict[str, Callable[..., ReferenceModel]] = {
    "llama": load_llama, "gpt2": load_gpt2, "mixtral": load_mixtral, "gemma3_text": load_gemma3,
}
SUPPORTED_MODEL_TYPES = tuple(LOADERS)


def loader_of(folder: Path, model_type: str | None) -> Callable[..., ReferenceModel]:
    if model_type not in LOADERS:
        raise UserError(f"{folder}: model_type {model_type!r} has no reference implementation "
                        f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
    return LOADERS[model_type]


def load_reference_model(folder: Path, model_type: str, dtype: torch.dtype, device: str) -> ReferenceModel:
    return loader_of(folder, model_type)(folder, dtype=dtype, device=device)


class ReferenceAdapter(ModelAdapter):
    def __init__(self, spec: str, folder: Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 weights_sha256: str | None = None, profiler: Profiler | None = None):
        self.spec = spec
        self.folder = Path(folder)
        config = read_config(self.folder)
        model_type = config.get("model_type")
        load = loader_of(self.folder, model_type)
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = load(self.folder, dtype=dtype, device=device)
        self.tokenizer = load_tokenizer(self.folder)
        self.max_length = self.model.config.max_position_embeddings
        self.weights_sha256 = weights_sha256
        self.implementation = f"reference-{model_type}"
        self.changes: dict[str, dict] = {}  # "lora" and "variant" reports, in the order applied
        # Counted before any variant: quantized layers keep their weights in buffers, not parameters.
        self.parameter_count = sum(p.numel() for p in self.model.parameters())
        self.packed_linear_layers = 0
        self.profiler = profiler
        # How generation decodes (harness/models/generation.py): with the KV cache or without it, and
        # speculatively (with a draft model, or by prompt lookup) or not. None changes a greedy answer.
        self.kv_cache = True
        self.speculation: Speculation | None = None
        self.draft: ReferenceAdapter | None = None

    def speculate(self, speculation: Speculation, draft: ReferenceAdapter | None = None) -> None:
        """Generation from now on is speculative; `draft` is the loaded draft model of a draft= speculation."""
        if draft is not None:
            check_draft(self, draft)
        self.speculation, self.draft = speculation, draft

    def new_batcher(self, batch_size: int, progress) -> ContinuousBatcher:
        """A continuous batcher that decodes as this adapter is set to."""
        speculator = None
        if self.speculation is not None and self.speculation.draft is not None:
            speculator = DraftModel(self.draft.model, self.device)
        elif self.speculation is not None:
            speculator = PromptLookup(self.speculation.ngram, self.tokenizer.eos_token_id)
        return ContinuousBatcher(self, batch_size, progress, kv_cache=self.kv_cache, speculator=speculator,
                                 draft_tokens=self.speculation.k if self.speculation else 0)

    @property
    def sampling_scheme(self) -> str | None:
        """Speculation draws a sampled text from the same distribution as plain sampling but reads the random stream
        otherwise, so it names another text: the response cache keys sampled answers by it (greedy ones not)."""
        return f"speculative {self.speculation.describe()}" if self.speculation else None

    def pack_linear_layers(self) -> None:
        """fp32 linear layers on a CPU run through oneDNN with packed weights (harness/models/packed_linear.py).
        Called last, once LoRA and any variant have replaced the layers they replace."""
        self.packed_linear_layers += pack_linear_layers(self.model)

    def apply_lora(self, adapter_folder: Path, merge: bool = False) -> None:
        self.changes["lora"] = apply_lora(self.model, adapter_folder, merge=merge)

    def apply_variant(self, variant: str) -> None:
        """Applies a variant (harness/models/variants.py) to the model, in place, after any LoRA."""
        report = check_variant(variant).apply(self.model, variant, self.changes)
        self.changes["variant"] = {"name": variant, **report}

    @property
    def fingerprint(self) -> str:
        base = super().fingerprint
        if not self.changes:
            return base
        # The adapter's weights and every setting that changes the numbers (alpha, patterns, merged), not its path.
        lora = {key: value for key, value in self.changes.get("lora", {}).items() if key != "path"}
        identity = {"lora": lora, "variant": self.changes.get("variant", {}).get("name")}
        return hashlib.sha256((base + json.dumps(identity, sort_keys=True)).encode()).hexdigest()

    def info(self) -> dict:
        info = {**super().info(), **self.changes}
        info["parameters"] = self.changes.get("variant", {}).get("total_parameters", self.parameter_count)
        info["packed_linear_layers"] = self.packed_linear_layers
        info["decoding"] = {"kv_cache": self.kv_cache,
                            "speculative": self.speculation.describe() if self.speculation else None}
        if self.draft is not None:
            info["decoding"]["draft"] = {"spec": self.draft.spec, "fingerprint": self.draft.fingerprint,
                                         "parameters": self.draft.info()["parameters"]}
        family = family_of(info["variant"]["name"]) if "variant" in info else None
        if family is not None and family.after_run is not None:
            # Counted as the model ran: read at the end of a run, it covers every request of the run.
            info["variant"] = {**info["variant"], **family.after_run(self.model)}
        return info

    # The plain paths (ModelAdapter's: every input computed whole with every position's logits; generation in
    # fixed batches) are kept as the reference the faster ones are tested against.
    plain_paths = False

    def _score_token_pairs(self, pairs, batch_size, on_done, kind):
        if self.plain_paths:
            return super()._score_token_pairs(pairs, batch_size, on_done, kind)
        return Scorer(self, batch_size, kind).score(pairs, on_done)

    def _generate_all(self, requests, rendered, generators, batch_size, progress):
        if self.plain_paths:
            return super()._generate_all(requests, rendered, generators, batch_size, progress)
        results = self.new_batcher(batch_size, progress).run(list(requests), rendered, generators)
        return [Generation(*fields) for fields in results]

    def _forward(self, input_ids, attention_mask=None, cache=None):
        if cache is None and attention_mask is not None:
            cache = self.model.new_cache()
        return self.model(input_ids, attention_mask=attention_mask, cache=cache), cache


def read_config(folder: Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise UserError(f"{folder} is not a model folder: it has no config.json")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON: {error}") from None
