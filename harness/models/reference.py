"""Adapter over our own reference implementations (today the reference LLaMA) loaded from a local folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from harness.errors import UserError
from harness.models.adapter import ModelAdapter
from harness.models.checkpoint import fingerprint_files
from harness.models.llama import load_llama
from harness.models.tokenizer import load_tokenizer

SUPPORTED_MODEL_TYPES = ("llama",)


class ReferenceAdapter(ModelAdapter):
    def __init__(self, spec: str, folder: Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 fingerprint: str | None = None):
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
        self._fingerprint = fingerprint

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = fingerprint_files(self.folder)
        return self._fingerprint

    def info(self) -> dict:
        parameters = self.model.num_parameters()
        return {
            "implementation": "reference-llama",
            "folder": str(self.folder),
            "parameters": parameters,
            "bytes": sum(p.numel() * p.element_size() for p in self.model.parameters()),
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "max_length": self.max_length,
            "bos_token_id": self.tokenizer.bos_token_id,
            "prefix_token_id": self.prefix_token_id,
        }

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
