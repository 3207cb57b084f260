"""Shared fixtures. The real SmolLM2 model is converted once into $HARNESS_HOME (about 30 s the first time)."""

import os
import tempfile

import pytest

from harness.models.registry import load_model


@pytest.fixture(scope="session")
def smollm2():
    return load_model("smollm2-135m")


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
