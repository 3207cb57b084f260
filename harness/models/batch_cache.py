"""The KV cache of a batch of sequences decoded together (harness/models/generation.py), with its (batch, columns)
mask of real tokens.

Rows are left-padded to a common width. A row's cached positions may also hold holes: speculative decoding
(harness/models/speculation.py) caches every draft token it verifies, and the rows that accept fewer than the
others keep their rejected columns, masked out, rather than have their whole cache moved. Nothing reads a masked
column: positions count real tokens only and attention is blind to masked keys (attention.positions_and_mask;
attention.sliding_window_mask measures distances in real positions), so a row's logits do not depend on where its
holes are. Holes and columns padding for every row are squeezed out when rows leave, which copies the cache anyway.
"""

from __future__ import annotations

import torch

from harness.models.attention import KVCache


class BatchCache:
    def __init__(self, cache: KVCache, mask: torch.Tensor):
        self.cache = cache
        self.mask = mask  # (rows, columns), 1 where a column holds one of the row's tokens

    @property
    def width(self) -> int:
        return self.mask.shape[1]

    def extend(self, positions: int) -> None:
        """Makes room for `positions` new tokens in every row, which the next forward pass fills."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], positions)], dim=1)
        self.cache.reserve(positions)

    def forget_last(self, counts: list[int]) -> None:
        """Row i forgets its counts[i] most recently cached tokens (draft tokens it rejected). Columns every row
        forgets are cut off (the cache keeps its room for the next ones); the rest become holes."""
        common = min(counts)
        if common:
            self.mask = self.mask[:, :self.width - common]
            for layer in range(len(self.cache.keys)):
                self.cache.keys[layer] = self.cache.keys[layer][:, :, :self.width]
                self.cache.values[layer] = self.cache.values[layer][:, :, :self.width]
        for row, count in enumerate(counts):
            if count > common:
                self.mask[row, self.width - (count - common):] = 0

    def keep(self, rows: list[int]) -> None:
        """Keeps only these rows, each right-aligned with its holes squeezed out, and drops the columns that are
        then padding for all of them."""
        mask = self.mask[rows].bool()
        real = mask.sum(1)
        width = int(real.max())
        # Column j of row r's new layout takes the old column holding its (j - (width - real[r]))-th real token.
        sources = torch.where(mask, torch.arange(self.width, device=mask.device), self.width)
        sources = sources.sort(dim=1).values[:, :width]  # each row's real columns in order, then filler
        shift = width - real  # left padding of each row in the new layout
        index = torch.arange(width, device=mask.device)[None] - shift[:, None]  # position among the row's tokens
        is_real = index >= 0
        columns = torch.where(is_real, sources.gather(1, index.clamp(min=0)), 0)
        self.mask = is_real.to(self.mask.dtype)
        for layer in range(len(self.cache.keys)):
            keys, values = self.cache.keys[layer][rows], self.cache.values[layer][rows]
            gather = columns[:, None, :, None].expand(-1, keys.shape[1], -1, keys.shape[3])
            self.cache.keys[layer] = keys.gather(2, gather)
            self.cache.values[layer] = values.gather(2, gather)

    def merge(self, other: BatchCache) -> None:
        """Adds another group's rows after these, left-padding the narrower to the wider."""
        width = max(self.width, other.width)
        pad = lambda tensor, dim: _left_pad(tensor, width - tensor.shape[dim], dim)
        self.mask = torch.cat([pad(self.mask, 1), pad(other.mask, 1)])
        for layer in range(len(self.cache.keys)):
            self.cache.keys[layer] = torch.cat([pad(self.cache.keys[layer], 2), pad(other.cache.keys[layer], 2)])
            self.cache.values[layer] = torch.cat([pad(self.cache.values[layer], 2),
                                                  pad(other.cache.values[layer], 2)])


def _left_pad(tensor: torch.Tensor, amount: int, dim: int) -> torch.Tensor:
    if amount == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = amount
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
