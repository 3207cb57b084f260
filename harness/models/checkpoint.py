"""Reading Hugging Face safetensors checkpoints, with errors a user can act on."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from harness.errors import UserError


def unfilled_embedding(rows: int, width: int) -> torch.nn.Embedding:
    """nn.Embedding(rows, width), left uninitialised when built on the meta device for a checkpoint to fill
    (fill_model). nn.Embedding's random initialisation there goes through torch's reference ops, which import
    torch._dynamo: a second or two of every process's start for numbers that are overwritten. Elsewhere (a test's
    random model) it is initialised as usual."""
    table = torch.empty(rows, width)
    if table.is_meta:
        return torch.nn.Embedding(rows, width, _weight=table)
    return torch.nn.Embedding(rows, width)


def load_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise UserError(f"no *.safetensors file in {folder}")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            state.update(load_file(file))
        except (SafetensorError, OSError) as error:
            raise UserError(f"cannot read checkpoint {file}: {error}") from None
    return state


def check_shapes(model: torch.nn.Module, state: dict[str, torch.Tensor], folder: Path) -> None:
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{n}: checkpoint {tuple(state[n].shape)}, model {expected[n]}"
             for n in expected if n in state and tuple(state[n].shape) != expected[n]]
    if missing or unexpected or wrong:
        detail = "; ".join(
            ([f"missing {missing[:3]}"] if missing else [])
            + ([f"unexpected {unexpected[:3]}"] if unexpected else [])
            + wrong[:3]
        )
        raise UserError(f"checkpoint in {folder} does not fit the architecture in its config.json: {detail}")


def fingerprint_files(folder: Path, pattern: str = "*.safetensors") -> str:
    """sha256 over the weight files' bytes (in name order): the identity of the weights for the run record."""
    digest = hashlib.sha256()
    for file in sorted(Path(folder).glob(pattern)):
        digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


# What decides a model's answers besides its weights: the tokenizer (its BOS rule, the chat template) and the config
# (the window, rope scaling). Their bytes enter the fingerprint, so that a changed file never reuses old answers.
DECIDING_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                  "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja")
HASH_NOTE = ".weights-sha256.json"  # the weights' sha256, with the size and mtime of each file it was made from


def weight_file_stats(folder: Path) -> dict[str, list[int]]:
    return {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(Path(folder).glob("*.safetensors"))}


def weights_sha256(folder: Path) -> str:
    """The weights' sha256, hashed again unless every file has the size and modification time the last hash was
    made from (then the note beside them is trusted: a changed, copied or replaced file is always hashed)."""
    folder = Path(folder)
    stats = weight_file_stats(folder)
    try:
        note = json.loads((folder / HASH_NOTE).read_text())
        if note["files"] == stats:
            return note["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = fingerprint_files(folder)
    try:  # best effort: a read-only folder (a shared Hub cache) is hashed on each use instead
        staged = folder / (HASH_NOTE + f".{os.getpid()}")
        staged.write_text(json.dumps({"files": stats, "sha256": digest}))
        os.replace(staged, folder / HASH_NOTE)
    except OSError:
        pass
    return digest


def deciding_files_sha256(folder: Path) -> str:
    """sha256 over the tokenizer and config files present in the folder (names and bytes)."""
    digest = hashlib.sha256()
    for name in DECIDING_FILES:
        if (Path(folder) / name).is_file():
            digest.update(name.encode() + b"\0" + (Path(folder) / name).read_bytes() + b"\0")
    return digest.hexdigest()


def fill_model(model: torch.nn.Module, state: dict[str, torch.Tensor], folder: Path, tied_embedding: str | None,
               dtype: torch.dtype, device: str) -> torch.nn.Module:
    """Loads a checkpoint's state into a model built on the meta device, checking every name and shape first.
    `tied_embedding` names the embedding an output head shares (tied checkpoints store it once): the head is then
    that very tensor, not a copy."""
    if tied_embedding is not None and tied_embedding in state:
        state["lm_head.weight"] = state[tied_embedding]
    check_shapes(model, state, folder)
    model.load_state_dict(state, strict=True, assign=True)
    if tied_embedding is not None:
        model.lm_head.weight = model.get_parameter(tied_embedding)
    return model.to(device=device, dtype=dtype).eval()
