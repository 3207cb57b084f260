"""The peer adapter: Hugging Face transformers' own implementation of a local model folder.

Same tokenization and scoring code as our reference adapter (harness.models.adapter), only the forward pass
differs, so comparing the two isolates the model implementation.
"""

from __future__ import annotations

from pathlib import Path

import torch

from harness.models.adapter import ModelAdapter
from harness.models.reference import read_config
from harness.models.tokenizer import load_tokenizer
from harness.systems.profiler import Profiler


class TransformersAdapter(ModelAdapter):
    def __init__(self, spec: str, folder: Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 profiler: Profiler | None = None):
        # Deferred: transformers' model classes take seconds to import, and only the peer needs them.
        import transformers
        from transformers import AutoModelForCausalLM

        self.spec = spec
        self.profiler = profiler
        self.folder = Path(folder)
        config = read_config(self.folder)
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
        self.model.to(self.device).eval()
        self.tokenizer = load_tokenizer(self.folder)
        self.max_length = int(config.get("max_position_embeddings") or config.get("n_positions") or 2048)
        self.implementation = f"transformers {transformers.__version__} {type(self.model).__name__}"

    @property
    def fingerprint(self) -> str:
        # Same weights, another implementation: the numbers may differ in the last bits, so the identity does too.
        return "transformers:" + super().fingerprint

    def _forward(self, input_ids, attention_mask=None, cache=None):
        if attention_mask is None:
            return self.model(input_ids=input_ids).logits, None
        # transformers takes positions from the cache length unless told: count real tokens, as for left padding.
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1]:]
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                         past_key_values=cache, use_cache=True)
        return out.logits, out.past_key_values
