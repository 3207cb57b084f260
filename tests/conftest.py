"""Shared fixtures. The real SmolLM2 model is converted once into $HARNESS_HOME (about 30 s the first time)."""

import pytest

from harness.models.registry import load_model


@pytest.fixture(scope="session")
def smollm2():
    return load_model("smollm2-135m")
