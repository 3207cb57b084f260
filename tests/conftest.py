"""Shared fixtures. The real SmolLM2 model is converted once into $HARNESS_HOME (about 30 s the first time)."""

import os
import tempfile

import pytest

from harness.models.registry import load_model


@pytest.fixture(scope="session")
def smollm2():
    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2_folder():
    """The converted model's folder (tokenizer, config, weights) without loading the model, for tests that need only
    its files (the tiny models of tests/tiny.py borrow its tokenizer)."""
    from harness.models.sources import smollm2_folder

    return smollm2_folder()


@pytest.fixture(scope="session")
def gemma3_folder():
    """The converted Gemma 3 270M folder, for tests that need its files (its tokenizer adds BOS)."""
    from harness.models.sources import gemma3_folder

    return gemma3_folder()


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory, smollm2_folder):
    """A tiny random LLaMA (tests/tiny.py) with SmolLM2's tokenizer and chat template and a 4,096-token window: a
    chat model that answers and judges MT-Bench in seconds."""
    import shutil

    from tests.tiny import make_tiny_llama_folder

    folder = make_tiny_llama_folder(tmp_path_factory.mktemp("tiny-chat"), smollm2_folder, max_positions=4096)
    shutil.copy(smollm2_folder / "chat_template.jinja", folder)
    return folder


# Runs made by the tests (in-process and as subprocesses, which inherit this) are recorded in a scratch results
# store, not in the user's $HARNESS_HOME/results.sqlite.
_SCRATCH = tempfile.mkdtemp(prefix="harness-tests-")
os.environ.setdefault("HARNESS_RESULTS_DB", os.path.join(_SCRATCH, "results.sqlite"))
# Likewise the response cache, for fixtures wider than one test (each test gets its own; see below).
os.environ.setdefault("HARNESS_CACHE_DB", os.path.join(_SCRATCH, "responses.sqlite"))


@pytest.fixture(autouse=True)
def scratch_response_cache(tmp_path, monkeypatch):
    """Each test gets an empty response cache: a response cached by another test would skip the model (and the
    profiler) in this one. Subprocesses inherit the variable."""
    monkeypatch.setenv("HARNESS_CACHE_DB", str(tmp_path / "responses.sqlite"))


@pytest.fixture
def runs_share_smollm2(smollm2, monkeypatch):
    """In-process `harness run --model smollm2-135m` (cpu, float32) evaluates the session's model instead of loading
    its own copy (seconds each, more on a busy machine); every other spec loads as usual. The run's profiler is put
    on the model for the run and taken off afterwards, so later tests find the model as they left it."""
    import harness.commands.run
    from harness.models import registry

    load, given = registry.load_model, smollm2.profiler

    def shared(text, device="cpu", dtype="float32", **options):
        own = options.get("max_length") or options.get("speculative") or options.get("kv_cache") is False
        if (text, device, dtype) != ("smollm2-135m", "cpu", "float32") or own:
            return load(text, device=device, dtype=dtype, **options)
        smollm2.profiler = options.get("profiler")
        return smollm2

    for module in (registry, harness.commands.run):  # the registry, and the command that imported its function
        monkeypatch.setattr(module, "load_model", shared, raising=False)
    yield
    smollm2.profiler = given
