"""Where the harness keeps its files, and the environment variables that move them: the one home of paths.

  HARNESS_HOME        converted models, the response cache and the results store (default ~/.cache/harness)
  HARNESS_CACHE_DB    the response cache's SQLite file (default $HARNESS_HOME/cache/responses.sqlite)
  HARNESS_RESULTS_DB  the results store's SQLite file (default $HARNESS_HOME/results.sqlite)
"""

from __future__ import annotations

import os
from pathlib import Path


def harness_home() -> Path:
    return Path(os.environ.get("HARNESS_HOME") or Path.home() / ".cache" / "harness")


def models_folder() -> Path:
    """Converted model folders (safetensors), one per source."""
    return harness_home() / "models"


def response_cache_path() -> Path:
    return Path(os.environ.get("HARNESS_CACHE_DB") or harness_home() / "cache" / "responses.sqlite")


def results_store_path() -> Path:
    """$HARNESS_RESULTS_DB if set (the test suite points it at a scratch file), else $HARNESS_HOME/results.sqlite."""
    return Path(os.environ.get("HARNESS_RESULTS_DB") or harness_home() / "results.sqlite")
