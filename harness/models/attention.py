"""What the reference models share (LLaMA, GPT-2, Mixtral, Gemma 3): the contract the scorer, the continuous batcher
and the adapter rely on (ReferenceModel), the KV caches they read and grow, each new token's position and attention
mask (and its sliding-window restriction), grouped-query attention, and attention after a prefix every row shares.

Kept in one place so that the models cannot disagree about positions, padding or what a cache holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from harness.models import packed_linear


class ReferenceConfig(Protocol):
    """The facts about a reference model that code outside it reads from `model.config`."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def max_position_embeddings(self) -> int: ...

    @property
    def num_hidden_layers(self) -> int: ...

    @property
    def num_attention_heads(self) -> int: ...


class ReferenceModel(Protocol):
    """A reference model (an nn.Module) as the scorer (scoring.py), the continuous batcher (generation.py) and
    the adapter (reference.py) use it."""

    config: ReferenceConfig
    lm_head: nn.Module  # the output head, run separately on the positions whose logits are needed

    def new_cache(self) -> KVCache:
        """An empty cache to pass to forward, which grows it."""

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 cache: KVCache | SharedPrefixCache | None = None, head: bool = True) -> torch.Tensor:
        """Logits (batch, seq, vocab) for every position of `input_ids` (batch, seq), or with head=False the final
        hidden states (batch, seq, hidden). `attention_mask` (batch, past + seq), 1 for real tokens and 0 for
        padding, is only needed when a batch is left-padded; positions then count real tokens only
        (positions_and_mask). With a KVCache the new positions continue after the cached ones and the cache grows
        by `seq`; with a SharedPrefixCache every row continues the one shared prefix, which does not grow."""

    def parameters(self) -> Iterator[nn.Parameter]: ...

    def modules(self) -> Iterator[nn.Module]: ...


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
                            packed: tuple[list, list] | None = None, window: int | None = None) -> torch.Tensor:
    """Causal attention of new positions q, k, v (batch, heads or kv heads, seq, head_dim), right-padded, after a
    prefix whose keys and values (1, kv heads, prefix, head_dim) every row shares; `packed` holds them packed for
    oneDNN (SharedPrefixCache.packed), to multiply by instead.

    The softmax runs over the prefix's keys and the row's own keys together, in two parts joined by their common
    maximum (the split softmax of flash-decoding and cascade inference). Against the prefix, all rows' queries for
    a key head form one matrix (kv heads, rows x group x seq, head_dim), so the prefix is read once, not copied to
    each row. The result equals attention over the concatenated keys up to float rounding.

    With `window` (a sliding-window layer), each query sees only the last `window` positions up to itself, prefix
    keys included; without it nothing else changes."""
    batch, heads, seq, dim = q.shape
    kv_heads = k.shape[1]
    group = heads // kv_heads
    scale = dim ** -0.5 if scale is None else scale
    grouped = q.view(batch, kv_heads, group, seq, dim) * scale  # scaled here: q is far smaller than the scores
    rows = grouped.permute(1, 0, 2, 3, 4).reshape(kv_heads, batch * group * seq, dim)
    on_own = torch.matmul(grouped, k[:, :, None].transpose(-1, -2))  # (batch, kv heads, group, seq, seq)
    causal = torch.ones(seq, seq, dtype=torch.bool, device=q.device).tril()
    prefix_length = k_prefix.shape[2]
    out_of_window = None  # (seq, prefix): prefix keys too old for each new position
    if window is not None:
        causal = causal.triu(1 - window)
        if prefix_length + seq > window:
            queries = prefix_length + torch.arange(seq, device=q.device)[:, None]
            out_of_window = torch.arange(prefix_length, device=q.device)[None] <= queries - window
    on_own = on_own.masked_fill_(~causal, float("-inf")).permute(1, 0, 2, 3, 4).reshape(kv_heads, -1, seq)
    own_values = v.transpose(0, 1)  # (kv heads, batch, seq, head_dim)
    outputs = []
    for h in range(kv_heads):  # one key head at a time: (rows, prefix) scores are the largest tensors here
        if packed is None:
            on_prefix = rows[h] @ k_prefix[0, h].T
        else:
            on_prefix = packed_linear.packed_linear(rows[h], packed[0][h], None)
        if out_of_window is not None:  # rows are (batch, group, seq) flattened: the mask repeats every seq rows
            on_prefix = on_prefix.view(-1, seq, prefix_length).masked_fill_(out_of_window, float("-inf"))
            on_prefix = on_prefix.view(-1, prefix_length)
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


def grouped_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                            scale: float | None = None) -> torch.Tensor:
    """Attention of q (batch, heads, seq, head_dim) over k, v (batch, kv heads, keys, head_dim), each key/value head
    serving heads / kv heads query heads; `mask` as positions_and_mask (or sliding_window_mask) gives it, None for
    plain causal attention over keys that are all new. `scale` defaults to head_dim ** -0.5."""
    batch, heads, seq, dim = q.shape
    groups = heads // k.shape[1]
    if mask is None:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
        return F.scaled_dot_product_attention(q, k, v, is_causal=seq > 1, scale=scale)
    # With a mask (a cache being continued), a key head's query heads are stacked as one longer query, which reads
    # the cache where it is: repeating the cache for every query head would copy all of it at each decoding step.
    stacked = q.reshape(batch, k.shape[1], groups * seq, dim)
    mask = mask.view(-1, 1, seq, mask.shape[-1])  # (batch, or 1 for all rows, 1, seq, keys)
    mask = mask[:, :, None].expand(-1, -1, groups, -1, -1).reshape(mask.shape[0], 1, groups * seq, -1)
    out = F.scaled_dot_product_attention(stacked, k, v, attn_mask=mask, scale=scale)
    return out.reshape(batch, heads, seq, dim)


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


def sliding_window_mask(mask: torch.Tensor | None, past: int, seq: int, window: int, device: torch.device,
                        attention_mask: torch.Tensor | None = None) -> torch.Tensor | None:
    """`mask` (positions_and_mask's, None meaning causal) for a sliding-window layer: each query also sees at most
    the last `window` positions up to itself. With `attention_mask` (batch, past + seq), distances are counted in
    real tokens, as positions are, so that padding or holes in a row's cache (harness/models/batch_cache.py) do not
    narrow what it sees; without it every column is a real token."""
    total = past + seq
    if total <= window:  # no key is out of reach yet
        return mask
    if attention_mask is None:
        key_positions = torch.arange(total, device=device)[None]  # (1, total)
    else:
        key_positions = attention_mask.long().cumsum(-1) - 1  # (batch, total): padding repeats its left neighbour's
    query_positions = key_positions[:, past:, None]  # (batch or 1, seq, 1)
    keys = key_positions[:, None, :]
    band = (keys <= query_positions) & (keys > query_positions - window)  # (batch or 1, seq, total)
    if attention_mask is None:
        band = band[0]  # (seq, total), as a mask of no batch
    else:
        band = band[:, None]  # (batch, 1, seq, total), as positions_and_mask's
    return band if mask is None else mask & band
