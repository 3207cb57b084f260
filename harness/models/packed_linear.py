"""fp32 linear layers on a CPU through oneDNN, with each weight reordered once into oneDNN's blocked layout.

Why: torch sends an fp32 `F.linear` on a CPU to MKL, and MKL runs its AVX2 code on AMD processors, AVX-512 or
not. On this project's machine (AMD EPYC, Zen 5, AVX-512, 2 cores) a 1024 x 576 by 576 x 1536 product runs at
230 GFLOP/s through MKL and at 548 GFLOP/s through oneDNN (which torch also ships) with the weight packed
beforehand. With the few rows of a decoding step the weights stream from memory, and oneDNN reads them at 44 GB/s
against MKL's 11.5 GB/s. docs/performance.md has the measurements.

The results are those of F.linear up to float rounding (the sums are taken in another order: about 3e-6 on outputs
of size 1). `pack_linear_layers` replaces every plain nn.Linear of a model by a PackedLinear that holds the same
Parameters, so tied weights stay tied and the state dict keeps its names. The packed copy is extra memory: the
dense weight is kept, for everything else that reads it (LoRA, quantization, the embedding a head is tied to).

A PackedLinear falls back to F.linear off the CPU, for other dtypes and when autograd needs a graph, and packs again
when its weight has changed in place (a LoRA merged afterwards) or been replaced. HARNESS_PACKED_LINEAR=0 turns the
whole path off, to compare or to save the memory.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

# oneDNN chooses the blocked layout for this many rows; measured on this machine, 8, 64 and 1,024 give the same
# speed for 8-row and 1,024-row inputs (1 is 1.8x slower for 8 rows).
LAYOUT_ROWS = 64


def available() -> bool:
    """Whether this torch build has the oneDNN operators (torch's CPU wheels do)."""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


def enabled() -> bool:
    return available() and os.environ.get("HARNESS_PACKED_LINEAR", "1") != "0"


def pack(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), LAYOUT_ROWS)


def packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def _weight_state(weight: torch.Tensor) -> tuple:
    # An in-place change bumps the version counter; a replaced tensor has another address. Inference tensors keep
    # no version counter (and cannot be changed outside inference mode).
    return weight.data_ptr(), None if weight.is_inference() else weight._version


class PackedLinear(nn.Linear):
    """An nn.Linear whose forward, for fp32 on a CPU, multiplies by a packed copy of its weight."""

    def __init__(self, linear: nn.Linear):
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias  # the same Parameter objects
        self._repack()

    def _repack(self) -> None:
        self._packed, self._packed_from = pack(self.weight), _weight_state(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        needs_graph = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
        if (x.device.type != "cpu" or weight.device.type != "cpu" or x.dtype != torch.float32
                or weight.dtype != torch.float32 or needs_graph):
            return F.linear(x, weight, self.bias)
        if self._packed_from != _weight_state(weight):
            self._repack()
        return packed_linear(x, self._packed, self.bias)


def pack_linear_layers(model: nn.Module) -> int:
    """Replaces every plain fp32 CPU nn.Linear of `model` (subclasses, such as LoRA's or quantized layers, are left
    alone; a LoRA layer's inner base layer is plain and is replaced). Returns how many were replaced."""
    if not enabled():
        return 0
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear and child.weight.device.type == "cpu" and child.weight.dtype == torch.float32:
                setattr(module, name, PackedLinear(child))
                replaced += 1
    return replaced
