"""Reference LLaMA: a readable PyTorch implementation that loads Hugging Face LLaMA-layout safetensors.

Token embedding, RMSNorm, rotary position embeddings (RoPE), grouped-query attention, a SwiGLU MLP, a tied or
untied output head, and logits for every position. The parameter names follow Hugging Face's `LlamaForCausalLM`
so a checkpoint's state dict loads without renaming. The KV caches, positions and masks it shares with the other
reference models are harness.models.attention's; `Llama` is a ReferenceModel as that module declares it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from harness.models.attention import (
    KVCache,
    SharedPrefixCache,
    grouped_query_attention,
    positions_and_mask,
    shared_prefix_attention,
)
from harness.models.checkpoint import fill_model, load_state_dict, unfilled_embedding


@dataclass
class LlamaConfig:
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    head_dim: int | None = None
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self):
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")

    @classmethod
    def from_hf_dict(cls, raw: dict) -> LlamaConfig:
        """Reads a Hugging Face `config.json` dict; newer transformers nest rope_theta in rope_parameters."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
        if "rope_theta" not in values and "rope_theta" in rope:
            values["rope_theta"] = rope["rope_theta"]
        if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
            raise ValueError(f"RoPE scaling {rope.get('rope_type')!r} is not implemented in the reference LLaMA")
        if isinstance(values.get("eos_token_id"), list):
            values["eos_token_id"] = values["eos_token_id"][0]
        return cls(**values)

    @classmethod
    def from_json(cls, path: Path) -> LlamaConfig:
        return cls.from_hf_dict(json.loads(Path(path).read_text()))


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 as the original implementation does, whatever the activation dtype.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (batch, seq, head_dim) for the given integer positions (batch, seq)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim))
    angles = positions.float()[..., None] * inv_freq  # (batch, seq, head_dim / 2)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # The "rotate half" convention of Hugging Face checkpoints (GGUF's interleaved layout is undone on conversion).
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[:, None] + rotated * sin[:, None]


class Attention(nn.Module):
    def __init__(self, config: LlamaConfig, layer_index: int):
        super().__init__()
        self.layer_index = layer_index
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)

    def forward(self, x, cos, sin, mask, cache: KVCache | SharedPrefixCache | None):
        batch, seq, _ = x.shape
        q = self.q_proj(x).view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if isinstance(cache, SharedPrefixCache):
            out = shared_prefix_attention(q, k, v, cache.keys[self.layer_index], cache.values[self.layer_index],
                                          packed=cache.packed(self.layer_index))
            return self.o_proj(out.transpose(1, 2).reshape(batch, seq, self.num_heads * self.head_dim))
        if cache is not None:
            k, v = cache.append(self.layer_index, k, v)
        out = grouped_query_attention(q, k, v, mask)
        return self.o_proj(out.transpose(1, 2).reshape(batch, seq, self.num_heads * self.head_dim))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: LlamaConfig, layer_index: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_index)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, mask, cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaBackbone(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.embed_tokens = unfilled_embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class Llama(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.model = LlamaBackbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def new_cache(self) -> KVCache:
        return KVCache(self.config.num_hidden_layers)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | SharedPrefixCache | None = None,
        head: bool = True,
    ) -> torch.Tensor:
        """Logits (batch, seq, vocab) for every position of `input_ids` (batch, seq); with head=False the final
        hidden states (batch, seq, hidden) instead, for a caller that needs logits at only a few positions.

        `attention_mask` (batch, past + seq), 1 for real tokens and 0 for padding, is only needed when a batch is
        left-padded (generation); right padding never changes the logits of the real positions under a causal mask.
        With `cache`, the new positions continue after the cached ones and the cache grows by `seq`.
        """
        positions, mask = positions_and_mask(input_ids, attention_mask, cache.length if cache is not None else 0)
        cos, sin = rotary_cos_sin(positions, self.config.head_dim, self.config.rope_theta, self.lm_head.weight.dtype)
        x = self.model.embed_tokens(input_ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask, cache)
        hidden = self.model.norm(x)
        return self.lm_head(hidden) if head else hidden


def load_llama(folder: Path, dtype: torch.dtype = torch.float32, device: str = "cpu") -> Llama:
    """Builds the model from `config.json` and loads every `*.safetensors` in a Hugging Face LLaMA-layout folder."""
    folder = Path(folder)
    config = LlamaConfig.from_json(folder / "config.json")
    with torch.device("meta"):
        model = Llama(config)
    tied = "model.embed_tokens.weight" if config.tie_word_embeddings else None
    return fill_model(model, load_state_dict(folder), folder, tied, dtype, device)
