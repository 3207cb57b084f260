"""Reference Mixtral: the reference LLaMA with a sparse mixture-of-experts MLP in every layer.

Mixtral (Jiang et al. 2024, arXiv:2401.04088) keeps LLaMA's embedding, RMSNorm, rotary attention with grouped
query heads, KV cache and output head; only the MLP changes, to `num_local_experts` SwiGLU experts of which a
router picks `num_experts_per_tok` per token, weighted by a softmax renormalised over the chosen ones (see
harness.models.moe). So `Mixtral` is a `Llama` whose MLPs are replaced, and forward, the KV cache and the
padding mask are LLaMA's own.

Checkpoints come in two layouts, both accepted:
  - per expert, as Mistral published it and as transformers 5's save_pretrained still writes it:
    model.layers.{i}.block_sparse_moe.gate.weight (E, hidden) and
    model.layers.{i}.block_sparse_moe.experts.{j}.w1 / w3 / w2 .weight = gate / up / down projections;
  - fused, as transformers 5 holds Mixtral in memory (and as a state dict saved directly writes it):
    model.layers.{i}.mlp.gate.weight, model.layers.{i}.mlp.experts.gate_up_proj (E, 2 x intermediate, hidden;
    gate rows first, then up rows) and model.layers.{i}.mlp.experts.down_proj (E, hidden, intermediate).
Both are renamed to this model's names (mlp.router, mlp.experts.{j}.gate_proj / up_proj / down_proj).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.errors import UserError
from harness.models.checkpoint import fill_model, load_state_dict
from harness.models.llama import Llama, LlamaConfig
from harness.models.moe import SparseMoE


@dataclass
class MixtralConfig(LlamaConfig):
    # intermediate_size (inherited) is the size of one expert
    num_local_experts: int = 8
    num_experts_per_tok: int = 2
    sliding_window: int | None = None


class Mixtral(Llama):
    def __init__(self, config: MixtralConfig):
        super().__init__(config)
        for layer in self.model.layers:
            # Attention and norms stay LLaMA's. The dense MLP Llama built is dropped: free where load_mixtral builds
            # (the meta device), a transient 1 / E of the experts' size elsewhere.
            layer.mlp = SparseMoE(config, config.num_local_experts, config.num_experts_per_tok, gating="softmax")


def read_mixtral_config(folder: Path) -> MixtralConfig:
    raw = json.loads((Path(folder) / "config.json").read_text())
    if raw.get("hidden_act", "silu") != "silu":
        raise UserError(f"{folder}: hidden_act {raw['hidden_act']!r} is not implemented (the reference Mixtral "
                        f"has SwiGLU experts, hidden_act 'silu')")
    config = MixtralConfig.from_hf_dict(raw)
    window = config.sliding_window
    if window is not None and window < config.max_position_embeddings:
        raise UserError(f"{folder}: sliding-window attention ({window} of {config.max_position_embeddings} "
                        f"positions) is not implemented in the reference Mixtral")
    return config


LEGACY_EXPERT = re.compile(r"model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.(w1|w2|w3)\.weight")
ROUTER = re.compile(r"model\.layers\.(\d+)\.(?:block_sparse_moe|mlp)\.gate\.weight")
FUSED_EXPERTS = re.compile(r"model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)")
PROJECTION_OF = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}


def to_our_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames a Mixtral checkpoint, per-expert or fused layout, to this model's parameter names."""
    renamed = {}
    for name, tensor in state.items():
        if match := LEGACY_EXPERT.fullmatch(name):
            layer, expert, w = match.groups()
            renamed[f"model.layers.{layer}.mlp.experts.{expert}.{PROJECTION_OF[w]}.weight"] = tensor
        elif match := ROUTER.fullmatch(name):
            renamed[f"model.layers.{match.group(1)}.mlp.router.weight"] = tensor
        elif match := FUSED_EXPERTS.fullmatch(name):
            layer, kind = match.groups()
            prefix = f"model.layers.{layer}.mlp.experts"
            for expert, weight in enumerate(tensor):
                if kind == "gate_up_proj":
                    gate, up = weight.chunk(2, dim=0)
                    renamed[f"{prefix}.{expert}.gate_proj.weight"] = gate
                    renamed[f"{prefix}.{expert}.up_proj.weight"] = up
                else:
                    renamed[f"{prefix}.{expert}.down_proj.weight"] = weight
        else:
            renamed[name] = tensor
    return renamed


def load_mixtral(folder: Path, dtype: torch.dtype = torch.float32, device: str = "cpu") -> Mixtral:
    """Builds the model from `config.json` and loads every `*.safetensors` in a Hugging Face Mixtral folder."""
    folder = Path(folder)
    config = read_mixtral_config(folder)
    with torch.device("meta"):
        model = Mixtral(config)
    tied = "model.embed_tokens.weight" if config.tie_word_embeddings else None
    return fill_model(model, to_our_names(load_state_dict(folder)), folder, tied, dtype, device)
