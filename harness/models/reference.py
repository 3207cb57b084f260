"""Adapter over our own reference implementations (today the reference LLaMA) loaded from a local folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from harness.errors import UserError
from harness.models.adapter import ModelAdapter
from harness.models.llama import load_llama
from harness.models.tokenizer import load_tokenizer

SUPPORTED_MODEL_TYPES = ("llama",)


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
        self.model = load_llama(self.folder, dtype=dtype, device=device)
        self.tokenizer = load_tokenizer(self.folder)
        self.max_length = self.model.config.max_position_embeddings
        self.weights_sha256 = weights_sha256
        self.implementation = "reference-llama"

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
