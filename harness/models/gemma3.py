"""Reference Gemma 3 (text): a readable PyTorch implementation that loads Hugging Face `gemma3_text` safetensors.

What differs from the reference LLaMA (Gemma Team 2025, "Gemma 3 Technical Report", arXiv:2503.19786, and
transformers' Gemma3ForCausalLM, whose parameter names this model keeps so a checkpoint loads without renaming):
  - the token embeddings are multiplied by sqrt(hidden_size), rounded to the activation dtype first (as the
    original does: in bfloat16 sqrt(640) becomes 25.25, not 25.298);
  - every RMSNorm stores its weight as an offset from one, x_hat * (1 + w), and multiplies in fp32 before casting
    back (LLaMA casts first);
  - each block has four norms: before and after attention, before and after the MLP; the residual adds the
    output of the post-norm;
  - queries and keys are RMS-normalised per head (q_norm, k_norm) before the rotary embedding, and the scores are
    scaled by query_pre_attn_scalar ** -0.5 rather than head_dim ** -0.5;
  - layers are of two kinds (config.layer_types): "sliding_attention" layers see only the last `sliding_window`
    positions up to the query and use the local rotary base (10,000); "full_attention" layers see the whole causal
    past with the global base (1,000,000). Five local layers to one global in Gemma 3;
  - the MLP is GeGLU, down(gelu_tanh(gate(x)) * up(x)); the output head is tied to the embedding.
Gemma 2's tanh soft-capping of scores and logits is gone in Gemma 3; a config that turns it on is refused, since
the scorer runs the output head itself and would skip a cap applied here.

The KV cache keeps every position in every layer, local ones included (for a 270M model a position costs 36 KB
in fp32); a local layer reads only the columns still in its window, so decoding far past the window costs it no
more than decoding at the window's edge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import UserError
from harness.models.attention import (
    KVCache,
    SharedPrefixCache,
    grouped_query_attention,
    positions_and_mask,
    shared_prefix_attention,
    sliding_window_mask,
)
from harness.models.checkpoint import fill_model, load_state_dict, unfilled_embedding
from harness.models.llama import apply_rotary, rotary_cos_sin

LOCAL, GLOBAL = "sliding_attention", "full_attention"


@dataclass
class Gemma3Config:
    # The defaults are transformers' Gemma3TextConfig's, so a config.json that leaves a key out means the same here.
    vocab_size: int = 262_208
    hidden_size: int = 2304
    intermediate_size: int = 9216
    num_hidden_layers: int = 26
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    head_dim: int = 256
    max_position_embeddings: int = 131_072
    rms_norm_eps: float = 1e-6
    query_pre_attn_scalar: float = 256
    sliding_window: int = 4096
    layer_types: list[str] | None = None
    rope_theta: float = 1_000_000.0  # full-attention layers
    rope_local_base_freq: float = 10_000.0  # sliding-window layers
    tie_word_embeddings: bool = True
    bos_token_id: int | None = 2
    eos_token_id: int | None = 1

    def __post_init__(self):
        if self.layer_types is None:
            self.layer_types = default_layer_types(self.num_hidden_layers, 6)
        if len(self.layer_types) != self.num_hidden_layers or set(self.layer_types) - {LOCAL, GLOBAL}:
            raise UserError(f"layer_types must give {LOCAL!r} or {GLOBAL!r} for each of the "
                            f"{self.num_hidden_layers} layers, got {self.layer_types}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise UserError("num_attention_heads must be a multiple of num_key_value_heads")

    @classmethod
    def from_hf_dict(cls, raw: dict) -> Gemma3Config:
        """Reads a `gemma3_text` config.json, as transformers 4 (rope_theta, rope_local_base_freq, rope_scaling) or 5
        (rope_parameters per layer kind) writes it; refuses what this model does not implement."""
        for key in ("attn_logit_softcapping", "final_logit_softcapping"):
            if raw.get(key) is not None:
                raise UserError(f"{key} = {raw[key]} is not implemented in the reference Gemma 3 (Gemma 2's)")
        if raw.get("use_bidirectional_attention"):
            raise UserError("use_bidirectional_attention (EmbeddingGemma) is not implemented in the reference Gemma 3")
        if raw.get("hidden_activation", "gelu_pytorch_tanh") not in ("gelu_pytorch_tanh", "gelu_tanh"):
            raise UserError(f"hidden_activation {raw['hidden_activation']!r} is not implemented (the reference "
                            f"Gemma 3 has a tanh-approximated GeGLU)")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known and v is not None}
        if raw.get("layer_types") is None:
            pattern = raw.get("sliding_window_pattern", raw.get("_sliding_window_pattern", 6))
            values["layer_types"] = default_layer_types(values.get("num_hidden_layers", cls.num_hidden_layers),
                                                        pattern)
        by_kind = raw.get("rope_parameters") or {}
        if GLOBAL not in by_kind and LOCAL not in by_kind:  # one set (as transformers 4's rope_scaling): global
            by_kind = {GLOBAL: by_kind or raw.get("rope_scaling") or {}}
        for kind, key in ((GLOBAL, "rope_theta"), (LOCAL, "rope_local_base_freq")):
            parameters = by_kind.get(kind) or {}
            if parameters.get("rope_type", parameters.get("type", "default")) != "default":
                raise UserError(f"RoPE scaling {parameters} of the {kind} layers is not implemented in the reference "
                                f"Gemma 3")
            if "rope_theta" in parameters:
                values[key] = parameters["rope_theta"]
        for key in ("bos_token_id", "eos_token_id"):
            if isinstance(values.get(key), list):
                values[key] = values[key][0]
        return cls(**values)

    @classmethod
    def from_json(cls, path: Path) -> Gemma3Config:
        return cls.from_hf_dict(json.loads(Path(path).read_text()))


def default_layer_types(layers: int, pattern: int) -> list[str]:
    """Every `pattern`-th layer global, the others local: how a config without layer_types is read."""
    return [GLOBAL if (i + 1) % pattern == 0 else LOCAL for i in range(layers)]


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(size))  # an offset from one: zeros is the identity scale
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * (1.0 + self.weight.float())).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, config: Gemma3Config, layer_index: int):
        super().__init__()
        self.layer_index = layer_index
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scale = config.query_pre_attn_scalar ** -0.5
        self.window = config.sliding_window if config.layer_types[layer_index] == LOCAL else None
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache: KVCache | SharedPrefixCache | None):
        batch, seq, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(batch, seq, self.num_heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(batch, seq, self.num_kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if isinstance(cache, SharedPrefixCache):
            out = shared_prefix_attention(q, k, v, cache.keys[self.layer_index], cache.values[self.layer_index],
                                          scale=self.scale, packed=cache.packed(self.layer_index), window=self.window)
        else:
            if cache is not None:
                k, v = cache.append(self.layer_index, k, v)
            # Keys before the last window + seq - 1 are outside every new query's window: leave them out rather than
            # mask them, so that decoding far past the window reads `window` keys, not the whole cache.
            reach = None if self.window is None else self.window + seq - 1
            if mask is not None and reach is not None and k.shape[2] > reach:
                k, v, mask = k[:, :, -reach:], v[:, :, -reach:], mask[..., -reach:]
            out = grouped_query_attention(q, k, v, mask, self.scale)
        return self.o_proj(out.transpose(1, 2).reshape(batch, seq, self.num_heads * self.head_dim))


class MLP(nn.Module):
    """GeGLU: down(gelu_tanh(gate(x)) * up(x)). Not a subclass of llama.MLP (SwiGLU), so that the :moe-eEkK variant,
    which splits SwiGLU MLPs, refuses it instead of splitting it with the wrong activation."""

    def __init__(self, config: Gemma3Config):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: Gemma3Config, layer_index: int):
        super().__init__()
        self.kind = config.layer_types[layer_index]
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_index)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.pre_feedforward_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)
        self.post_feedforward_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache):
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), cos, sin, mask, cache))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class Gemma3Backbone(nn.Module):
    def __init__(self, config: Gemma3Config):
        super().__init__()
        self.embed_tokens = unfilled_embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class Gemma3(nn.Module):
    def __init__(self, config: Gemma3Config):
        super().__init__()
        self.config = config
        self.model = Gemma3Backbone(config)
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
        """Logits (batch, seq, vocab) for every position of `input_ids` (batch, seq), or with head=False the final
        hidden states; `attention_mask` and `cache` as for the reference LLaMA (attention.ReferenceModel)."""
        config = self.config
        past = cache.length if cache is not None else 0
        positions, mask = positions_and_mask(input_ids, attention_mask, past)
        dtype = self.lm_head.weight.dtype
        rotary = {GLOBAL: rotary_cos_sin(positions, config.head_dim, config.rope_theta, dtype),
                  LOCAL: rotary_cos_sin(positions, config.head_dim, config.rope_local_base_freq, dtype)}
        masks = {GLOBAL: mask,
                 LOCAL: sliding_window_mask(mask, past, input_ids.shape[1], config.sliding_window, input_ids.device,
                                            attention_mask)}
        x = self.model.embed_tokens(input_ids)
        x = x * torch.tensor(config.hidden_size ** 0.5).to(x.dtype)  # to fp32, then the dtype: the original's rounding
        for layer in self.model.layers:
            cos, sin = rotary[layer.kind]
            x = layer(x, cos, sin, masks[layer.kind], cache)
        hidden = self.model.norm(x)
        return self.lm_head(hidden) if head else hidden


def load_gemma3(folder: Path, dtype: torch.dtype = torch.float32, device: str = "cpu") -> Gemma3:
    """Builds the model from `config.json` and loads every `*.safetensors` in a Hugging Face gemma3_text folder."""
    folder = Path(folder)
    config = Gemma3Config.from_json(folder / "config.json")
    with torch.device("meta"):
        model = Gemma3(config)
    tied = "model.embed_tokens.weight" if config.tie_word_embeddings else None
    return fill_model(model, load_state_dict(folder), folder, tied, dtype, device)
