"""Reference LLaMA: a readable PyTorch implementation that loads Hugging Face LLaMA-layout safetensors.

Token embedding, RMSNorm, rotary position embeddings (RoPE), grouped-query attention, a SwiGLU MLP, a tied or
untied output head, a KV cache for incremental decoding, and logits for every position. The parameter names
follow Hugging Face's `LlamaForCausalLM` so a checkpoint's state dict loads without renaming.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from harness.models import packed_linear


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
    def from_hf_dict(cls, raw: dict) -> "LlamaConfig":
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
    def from_json(cls, path: Path) -> "LlamaConfig":
        return cls.from_hf_dict(json.loads(Path(path).read_text()))


class KVCache:
    """Keys and values of every layer for the positions seen so far, grown by one call at a time.

    An append copies the whole cache into a new tensor, unless reserve() has made room after the cached positions:
    then it writes in place. Decoding appends one position a step, and without the room each step would copy every
    layer's keys and values."""

    RESERVE_BLOCK = 128  # positions of room made at once, so that decoding reallocates once every this many steps

    def __init__(self, num_layers: int):
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self._room: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * num_layers  # buffers keys/values view

    @property
    def length(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def reserve(self, positions: int) -> None:
        """Makes room for `positions` more in every layer (RESERVE_BLOCK at least, when it must make any)."""
        for layer, (k, v) in enumerate(zip(self.keys, self.values)):
            if k is None or self._room_for(layer, positions):
                continue
            used, total = k.shape[2], k.shape[2] + max(positions, self.RESERVE_BLOCK)
            buffers = []
            for cached in (k, v):
                buffer = cached.new_empty(cached.shape[0], cached.shape[1], total, cached.shape[3])
                buffer[:, :, :used] = cached
                buffers.append(buffer)
            self._room[layer] = (buffers[0], buffers[1])
            self.keys[layer], self.values[layer] = buffers[0][:, :, :used], buffers[1][:, :, :used]

    def _room_for(self, layer: int, positions: int) -> bool:
        # A caller may have replaced keys[layer] (generation drops rows and columns): the room is then gone.
        room, k, v = self._room[layer], self.keys[layer], self.values[layer]
        return (room is not None and k.data_ptr() == room[0].data_ptr() and v.data_ptr() == room[1].data_ptr()
                and k.stride() == room[0].stride() and k.shape[:2] == room[0].shape[:2]
                and k.shape[2] + positions <= room[0].shape[2])

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys[layer] is not None and self._room_for(layer, k.shape[2]):
            used, end = self.keys[layer].shape[2], self.keys[layer].shape[2] + k.shape[2]
            key_buffer, value_buffer = self._room[layer]
            key_buffer[:, :, used:end] = k
            value_buffer[:, :, used:end] = v
            k, v = key_buffer[:, :, :end], value_buffer[:, :, :end]
        elif self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


class SharedPrefixCache:
    """A batch that continues one shared prefix (harness/models/scoring.py): every row reads the prefix's keys and
    values, computed once with a batch of one, and they are never copied to each row. Attention over them is
    shared_prefix_attention; the new positions' keys and values are not kept (nothing continues them).

    On a CPU in fp32, each layer's prefix keys and values are also packed for oneDNN the first time a batch reads
    them (packed_linear.py), so the products against the prefix run at oneDNN's speed rather than MKL's; the
    scorer keeps one SharedPrefixCache per prefix, so the packing is done once for all its batches."""

    def __init__(self, prefix: KVCache):
        self.keys, self.values = prefix.keys, prefix.values
        self._packed: dict[int, tuple[list, list] | None] = {}

    @property
    def length(self) -> int:
        return self.keys[0].shape[2]

    def packed(self, layer: int) -> tuple[list, list] | None:
        """Per key head: the prefix keys (prefix, head_dim) and values transposed (head_dim, prefix), packed as
        linear weights; None where packed linear layers are off or do not apply."""
        if layer not in self._packed:
            k, v = self.keys[layer], self.values[layer]
            if packed_linear.enabled() and k.device.type == "cpu" and k.dtype == torch.float32:
                self._packed[layer] = ([packed_linear.pack(k[0, h]) for h in range(k.shape[1])],
                                       [packed_linear.pack(v[0, h].T.contiguous()) for h in range(v.shape[1])])
            else:
                self._packed[layer] = None
        return self._packed[layer]


def shared_prefix_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_prefix: torch.Tensor,
                            v_prefix: torch.Tensor, scale: float | None = None,
                            packed: tuple[list, list] | None = None) -> torch.Tensor:
    """Causal attention of new positions q, k, v (batch, heads or kv heads, seq, head_dim), right-padded, after a
    prefix whose keys and values (1, kv heads, prefix, head_dim) every row shares; `packed` holds them packed for
    oneDNN (SharedPrefixCache.packed), to multiply by instead.

    The softmax runs over the prefix's keys and the row's own keys together, in two parts joined by their common
    maximum (the split softmax of flash-decoding and cascade inference). Against the prefix, all rows' queries for
    a key head form one matrix (kv heads, rows x group x seq, head_dim), so the prefix is read once, not copied to
    each row. The result equals attention over the concatenated keys up to float rounding."""
    batch, heads, seq, dim = q.shape
    kv_heads = k.shape[1]
    group = heads // kv_heads
    scale = dim ** -0.5 if scale is None else scale
    grouped = q.view(batch, kv_heads, group, seq, dim) * scale  # scaled here: q is far smaller than the scores
    rows = grouped.permute(1, 0, 2, 3, 4).reshape(kv_heads, batch * group * seq, dim)
    on_own = torch.matmul(grouped, k[:, :, None].transpose(-1, -2))  # (batch, kv heads, group, seq, seq)
    causal = torch.ones(seq, seq, dtype=torch.bool, device=q.device).tril()
    on_own = on_own.masked_fill_(~causal, float("-inf")).permute(1, 0, 2, 3, 4).reshape(kv_heads, -1, seq)
    own_values = v.transpose(0, 1)  # (kv heads, batch, seq, head_dim)
    outputs = []
    for h in range(kv_heads):  # one key head at a time: (rows, prefix) scores are the largest tensors here
        if packed is None:
            on_prefix = rows[h] @ k_prefix[0, h].T
        else:
            on_prefix = packed_linear.packed_linear(rows[h], packed[0][h], None)
        top = torch.maximum(on_prefix.amax(-1, keepdim=True), on_own[h].amax(-1, keepdim=True))
        on_prefix = on_prefix.sub_(top).exp_()
        own = (on_own[h] - top).exp_()
        total = on_prefix.sum(-1, keepdim=True) + own.sum(-1, keepdim=True)
        if packed is None:
            out = on_prefix @ v_prefix[0, h]
        else:
            out = packed_linear.packed_linear(on_prefix, packed[1][h], None)
        out += torch.matmul(own.view(batch, group * seq, seq), own_values[h]).view(-1, dim)
        outputs.append(out / total)
    out = torch.stack(outputs)  # (kv heads, rows, head_dim)
    return out.view(kv_heads, batch, group, seq, dim).permute(1, 0, 2, 3, 4).reshape(batch, heads, seq, dim)


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

    def forward(self, x, cos, sin, mask, cache: KVCache | None):
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
        # Grouped-query attention: each key/value head serves num_heads / num_kv_heads query heads.
        groups = self.num_heads // self.num_kv_heads
        if mask is None:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=seq > 1)
        else:
            # With a mask (a cache being continued), a key head's query heads are stacked as one longer query,
            # which reads the cache where it is: repeating the cache for every query head would copy all of it
            # at each decoding step.
            stacked = q.reshape(batch, self.num_kv_heads, groups * seq, self.head_dim)
            mask = mask.view(-1, 1, seq, mask.shape[-1])  # (batch, or 1 for all rows, 1, seq, keys)
            mask = mask[:, :, None].expand(-1, -1, groups, -1, -1).reshape(mask.shape[0], 1, groups * seq, -1)
            out = F.scaled_dot_product_attention(stacked, k, v, attn_mask=mask)
            out = out.reshape(batch, self.num_heads, seq, self.head_dim)
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
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
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
        cache: KVCache | None = None,
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


def positions_and_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                       past: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each new token's position and the attention mask, for `input_ids` (batch, seq) after `past` cached
    positions; shared by the reference models so that they cannot disagree about positions or padding."""
    batch, seq = input_ids.shape
    if attention_mask is None:
        positions = torch.arange(past, past + seq, device=input_ids.device).expand(batch, seq)
        mask = None
        if past and seq > 1:  # causal over the new block, full view of the cache
            mask = torch.ones(seq, past + seq, dtype=torch.bool, device=input_ids.device).tril(past)
        return positions, mask
    # Positions count real tokens only, so a left-padded sequence gets the same positions as unpadded.
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]
    return positions, padding_causal_mask(attention_mask.bool(), past, seq)


def padding_causal_mask(key_is_real: torch.Tensor, past: int, seq: int) -> torch.Tensor:
    """The attention mask (batch, 1, seq, past + seq) of a left-padded batch: causal, and blind to padding keys."""
    total = key_is_real.shape[1]
    causal = torch.ones(seq, total, dtype=torch.bool, device=key_is_real.device).tril(past)
    mask = causal[None] & key_is_real[:, None, :]
    # A padding query would see no key at all (a softmax over nothing is NaN): let it see itself.
    diagonal = torch.zeros(seq, total, dtype=torch.bool, device=key_is_real.device)
    diagonal[torch.arange(seq), past + torch.arange(seq)] = True
    return (mask | diagonal[None])[:, None]


def load_llama(folder: Path, dtype: torch.dtype = torch.float32, device: str = "cpu") -> Llama:
    """Builds the model from `config.json` and loads every `*.safetensors` in a Hugging Face LLaMA-layout folder."""
    from harness.models.checkpoint import fill_model, load_state_dict

    folder = Path(folder)
    config = LlamaConfig.from_json(folder / "config.json")
    with torch.device("meta"):
        model = Llama(config)
    tied = "model.embed_tokens.weight" if config.tie_word_embeddings else None
    return fill_model(model, load_state_dict(folder), folder, tied, dtype, device)
