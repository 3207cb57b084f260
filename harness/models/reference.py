"""Adapter over our own reference implementations (LLaMA, GPT-2, Mixtral) loaded from a local folder, with the
variants a spec may add: a LoRA adapter (+lora=PATH), quantization (:int8, :int4-gG, :dynamic-int8) or a
mixture-of-experts split (:moe-eEkK). Each change is described in the run record and enters the fingerprint, so
that a variant's numbers are never taken for the base model's."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from harness.errors import UserError
from harness.models.adapter import ModelAdapter
from harness.models.tokenizer import load_tokenizer


def load_reference_model(folder: Path, model_type: str, dtype: torch.dtype, device: str) -> torch.nn.Module:
    if model_type == "llama":
        from harness.models.llama import load_llama
        return load_llama(folder, dtype=dtype, device=device)
    if model_type == "gpt2":
        from harness.models.gpt import load_gpt2
        return load_gpt2(folder, dtype=dtype, device=device)
    if model_type == "mixtral":
        from harness.models.mixtral import load_mixtral
        return load_mixtral(folder, dtype=dtype, device=device)
    raise UserError(f"{folder}: model_type {model_type!r} has no reference implementation "
                    f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")


SUPPORTED_MODEL_TYPES = ("llama", "gpt2", "mixtral")


class ReferenceAdapter(ModelAdapter):
    def __init__(self, spec: str, folder: Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 weights_sha256: str | None = None):
        self.spec = spec
        self.folder = Path(folder)
        config = read_config(self.folder)
        model_type = config.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise UserError(f"{self.folder}: model_type {model_type!r} has no reference implementation "
                            f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = load_reference_model(self.folder, model_type, dtype, device)
        self.tokenizer = load_tokenizer(self.folder)
        self.max_length = self.model.config.max_position_embeddings
        self.weights_sha256 = weights_sha256
        self.implementation = f"reference-{model_type}"
        self.changes: dict[str, dict] = {}  # "lora" and "variant" reports, in the order applied
        # Counted before any variant: quantized layers keep their weights in buffers, not parameters.
        self.parameter_count = sum(p.numel() for p in self.model.parameters())
        self.packed_linear_layers = 0

    def pack_linear_layers(self) -> None:
        """fp32 linear layers on a CPU run through oneDNN with packed weights (harness/models/packed_linear.py).
        Called last, once LoRA and any variant have replaced the layers they replace."""
        from harness.models.packed_linear import pack_linear_layers

        self.packed_linear_layers += pack_linear_layers(self.model)

    def apply_lora(self, adapter_folder: Path, merge: bool = False) -> None:
        from harness.models.lora import apply_lora

        self.changes["lora"] = apply_lora(self.model, adapter_folder, merge=merge)

    def apply_variant(self, variant: str) -> None:
        from harness.models.registry import MOE_VARIANT

        moe = MOE_VARIANT.fullmatch(variant)
        if moe:
            from harness.models.moe import moefy

            if "lora" in self.changes and not self.changes["lora"]["merged"]:
                raise UserError(f":{variant} splits the MLP weights into experts; an unmerged LoRA would be lost "
                                "there: use +lora=PATH,merge")

            report = moefy(self.model, experts=int(moe.group(1)), top_k=int(moe.group(2)))
        else:
            from harness.models.quantize import quantize, random_token_calibration

            # int4 fits weigh each input channel by its measured mean square, from random tokens (no data needed).
            calibrate = random_token_calibration(self.model.config.vocab_size, length=min(1024, self.max_length))
            report = quantize(self.model, variant, calibrate=calibrate)
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
        if self.changes.get("variant", {}).get("name", "").startswith("moe-"):
            from harness.models.moe import expert_load

            # Counted as the model ran: read at the end of a run, it covers every request of the run.
            info["variant"] = {**info["variant"], "expert_load": expert_load(self.model)}
        return info

    # The plain paths (ModelAdapter's: every input computed whole with every position's logits; generation in
    # fixed batches) are kept as the reference the faster ones are tested against.
    plain_paths = False

    def _score_token_pairs(self, pairs, batch_size, on_done, kind):
        if self.plain_paths:
            return super()._score_token_pairs(pairs, batch_size, on_done, kind)
        from harness.models.scoring import Scorer

        return Scorer(self, batch_size, kind).score(pairs, on_done)

    def _generate_all(self, requests, rendered, generators, batch_size, progress):
        if self.plain_paths:
            return super()._generate_all(requests, rendered, generators, batch_size, progress)
        from harness.models.adapter import Generation
        from harness.models.generation import ContinuousBatcher

        results = ContinuousBatcher(self, batch_size, progress).run(list(requests), rendered, generators)
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
