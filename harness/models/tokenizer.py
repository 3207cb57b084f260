"""Loads a model folder's own tokenizer (tokenizer.json and its config) through transformers."""

from __future__ import annotations

from pathlib import Path

from harness.errors import UserError


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer  # deferred: transformers takes seconds to import

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load the tokenizer of {folder}: {str(error).splitlines()[0]}") from None
