"""`harness serve --model SPEC`: a model spec behind an OpenAI-compatible HTTP server (harness/serving)."""

from __future__ import annotations

import sys

from harness.errors import UserError
from harness.models.registry import load_model, parse_spec
from harness.serving.server import serve


def serve_model(spec: str, device: str, dtype: str, max_length: int | None, revision: str | None, host: str,
                port: int) -> int:
    if parse_spec(spec).name == "openai":
        raise UserError("harness serve serves a local model; openai:MODEL@URL is already behind a server")
    adapter = load_model(spec, device=device, dtype=dtype, max_length=max_length, revision=revision,
                         progress=lambda message: print(message, file=sys.stderr))
    print(f"serving {spec} at http://{host}:{port}/v1 (evaluate it with --model openai:{spec}@http://{host}:{port}/v1)",
          file=sys.stderr, flush=True)
    serve(adapter, host, port)
    return 0
