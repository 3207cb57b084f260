"""Data-parallel runs on torch.distributed: `torchrun --nproc-per-node N -m harness run ...`.

torchrun starts N processes with RANK, WORLD_SIZE and LOCAL_RANK set (across nodes through its rendezvous, with
nothing more here). Each process loads the model (on GPU number LOCAL_RANK with --device cuda) and answers every
N-th chunk of requests (the evaluator's commit chunks, so each chunk is computed exactly as one process would
compute it); the answers are gathered on every rank, and rank 0 alone scores them and writes the run. gloo
carries the gathering on CPUs, NCCL on GPUs.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def start(device: str) -> str:
    """Joins the process group when torchrun started this process; returns the device this rank uses."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    if device == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl")
        return f"cuda:{local_rank}"
    dist.init_process_group(backend="gloo")
    return device


def rank_and_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(partial: dict[int, Any]) -> dict[int, Any]:
    """Every rank's answers, keyed by request index, on every rank."""
    if rank_and_size()[1] == 1:
        return partial
    parts: list[dict[int, Any] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, partial)
    return {index: answer for part in parts for index, answer in part.items()}


def finish() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
