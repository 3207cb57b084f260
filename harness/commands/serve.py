"""`harness serve --model SPEC`: a model spec behind an OpenAI-compatible HTTP server (harness/serving)."""

from __future__ import annotations

import sys

from harness.errors import UserError
from harness.models.registry import load_model, parse_spec
from harness.serving.server import ServerSettings, serve


def serve_model(spec: str, device: str, dtype: str, max_length: int | None, revision: str | None, host: str,
                port: int, max_batch: int, max_queued: int, max_body_bytes: int, api_key: str | None,
                speculative: str | None = None, kv_cache: bool = True) -> int:
    if parse_spec(spec).name == "openai":
        raise UserError("harness serve serves a local model; openai:MODEL@URL is already behind a server")
    adapter = load_model(spec, device=device, dtype=dtype, max_length=max_length, revision=revision,
                         progress=lambda message: print(message, file=sys.stderr), speculative=speculative,
                         kv_cache=kv_cache)
    print(f"serving {spec} at http://{host}:{port}/v1, {max_batch} sequences at a time "
          f"(evaluate it with --model openai:{spec}@http://{host}:{port}/v1)", file=sys.stderr, flush=True)
    settings = ServerSettings(max_batch=max_batch, max_queued=max_queued, max_body_bytes=max_body_bytes,
                              api_key=api_key or None)
    serve(adapter, host, port, settings)
    return 0
