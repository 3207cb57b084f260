"""Where models come from: the Hub code path on a local folder in the Hub's cache layout, hf:PATH, GGUF checks."""

import json
import shutil

import pytest

from harness.engine.requests import LoglikelihoodRequest
from harness.errors import UserError
from harness.models import sources
from harness.models.checkpoint import weights_sha256
from harness.models.registry import load_model, parse_spec
from tests.tiny import make_tiny_llama_folder


def hub_cache_with(repo_id: str, folder, cache):
    """Lays `folder` out as huggingface_hub's cache does after a download of `repo_id`."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(folder, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return repo / "snapshots" / revision


def test_hub_repository_id_loads_through_snapshot_download(tmp_path, monkeypatch, smollm2):
    tiny = make_tiny_llama_folder(tmp_path / "tiny", smollm2.folder)
    snapshot = hub_cache_with("someone/tiny-llama", tiny, tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    adapter = load_model("hf:someone/tiny-llama")
    assert adapter.folder == snapshot
    local = load_model(f"hf:{tiny}")
    request = [LoglikelihoodRequest("Hello", " world")]
    assert adapter.loglikelihood(request)[0] == local.loglikelihood(request)[0]
    with pytest.raises(UserError, match="cannot load someone/absent from the Hugging Face Hub"):
        load_model("hf:someone/absent")


def test_not_a_gguf_is_refused(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(UserError, match="not a GGUF file"):
        sources.convert_gguf(fake, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_default_model_folder_is_complete(smollm2):
    assert sources.packaged_smollm2_gguf() is not None
    assert (smollm2.folder / sources.SOURCE_RECORD).is_file()
    record = json.loads((smollm2.folder / sources.SOURCE_RECORD).read_text())
    assert weights_sha256(smollm2.folder) == record["weights_sha256"]  # the converted weights, unchanged on disk
    info = smollm2.info()
    assert info["parameters"] == 134_515_008 and info["max_length"] == 8192 and info["prefix_token_id"] == 1


def test_model_specs():
    assert parse_spec("smollm2-135m").name == "smollm2-135m"
    assert parse_spec("hf:/some/path").path == "/some/path"
    assert parse_spec("smollm2-135m:int8").variant == "int8"
    with pytest.raises(UserError, match="needs a path"):
        parse_spec("transformers:")


@pytest.mark.parametrize("text, expected", [
    ("smollm2-135m:int4-g64", ("smollm2-135m", None, "int4-g64", None, False)),
    ("smollm2-135m:moe-e8k2", ("smollm2-135m", None, "moe-e8k2", None, False)),
    ("hf:/models/gpt2:int8", ("hf", "/models/gpt2", "int8", None, False)),
    ("hf:C:/odd:path", ("hf", "C:/odd:path", None, None, False)),  # a colon in a path is not a variant
    ("smollm2-135m+lora=/adapters/a", ("smollm2-135m", None, None, "/adapters/a", False)),
    ("smollm2-135m:int8+lora=/adapters/a,merge", ("smollm2-135m", None, "int8", "/adapters/a", True)),
])
def test_variant_and_lora_specs(text, expected):
    spec = parse_spec(text)
    assert (spec.name, spec.path, spec.variant, spec.lora, spec.lora_merge) == expected


@pytest.mark.parametrize("text, message", [
    ("smollm2-135m:int3", "unknown variant 'int3'"),
    ("smollm2-135m:moe-eEkK", "malformed model spec"),
    ("smollm2-135m:moe-e2k3", "need 1 <= K <= E"),
    ("transformers:/x:int8", "transformers:PATH is the unmodified peer"),
    ("smollm2-135m+lora=/a,mrege", "malformed LoRA suffix"),
])
def test_bad_variant_specs(text, message):
    with pytest.raises(UserError, match=message):
        parse_spec(text)
