"""One request of a load run: a streamed completion sent to an OpenAI-compatible server, timed as it arrives.

Times are the client's monotonic clock (time.perf_counter) when bytes arrive:
  - ttft: from sending to the first chunk that carries text (a chunk with no text, like chat's role chunk, is not
    a token);
  - itl: the gaps between consecutive chunks that carry text. A server may send several tokens in one chunk; the
    gap is then the chunk's, and tpot below is the per-token figure;
  - tpot: (e2e - ttft) / (output tokens - 1), output tokens as the server's `usage` counts them (asked for with
    `stream_options.include_usage`), or the chunks with text where it sends none;
  - e2e: from sending to the end of the stream;
  - header_delay: from sending to the moment the request's headers start on the wire (httpx's trace hook): the
    client's own wait for a pooled connection, the connect, and its event loop's delay. "Sending" is the call, as
    vLLM's benchmark_serving times it, so ttft and e2e include this delay; guidellm starts its clock at the headers
    instead, and reads ttft lower by it (docs/serving.md).

What the server sends back is treated as hostile: a status other than 200, a line that is not an event, an event
that is not JSON, an error event, a stream that ends before `[DONE]`, or a timeout make the request failed, with a
one-line reason; nothing it sends can stop the run.
"""

from __future__ import annotations

import json
import time

import httpx

MAX_LINE = 1 << 20  # an event line longer than this is not an answer to a load test's request


class BadAnswer(Exception):
    """What the server sent is not a streamed completion."""


async def send(client: httpx.AsyncClient, url: str, body: dict, scheduled: float) -> dict:
    """Sends one request (its `body` for /completions, `stream` set here) and returns its record."""
    record: dict = {"scheduled": scheduled, "sent": time.perf_counter(), "header_delay": None, "ttft": None,
                    "tpot": None, "itl": [], "e2e": None, "input_tokens": None, "output_tokens": None, "error": None}

    async def trace(event: str, info: dict) -> None:
        if record["header_delay"] is None and event.endswith(".send_request_headers.started"):
            record["header_delay"] = time.perf_counter() - record["sent"]

    payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
    chunks_with_text, last_chunk, done = 0, None, False
    try:
        async with client.stream("POST", f"{url}/completions", json=payload,
                                 extensions={"trace": trace}) as response:
            if response.status_code != 200:
                text = (await response.aread())[:300].decode("utf-8", "replace")
                raise BadAnswer(f"HTTP {response.status_code}: {' '.join(text.split())}")
            async for line in response.aiter_lines():
                if len(line) > MAX_LINE:
                    raise BadAnswer("an event line over 1 MiB")
                if not line.startswith("data:"):
                    continue  # blank lines between events, comments, other fields
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                event = json.loads(data)
                if not isinstance(event, dict):
                    raise BadAnswer("an event that is not a JSON object")
                if "error" in event:
                    raise BadAnswer(f"error event: {str(event['error'])[:200]}")
                now = time.perf_counter()
                if any(isinstance(c, dict) and c.get("text") for c in event.get("choices") or []):
                    if record["ttft"] is None:
                        record["ttft"] = now - record["sent"]
                    else:
                        record["itl"].append(now - last_chunk)
                    last_chunk = now
                    chunks_with_text += 1
                usage = event.get("usage")
                if isinstance(usage, dict):
                    record["input_tokens"] = _count(usage.get("prompt_tokens"))
                    record["output_tokens"] = _count(usage.get("completion_tokens"))
        if not done:
            raise BadAnswer("the stream ended before [DONE]")
    except (httpx.HTTPError, BadAnswer, ValueError) as error:  # ValueError: JSON that does not parse
        record["error"] = f"{type(error).__name__}: {error}"[:300]
        return record
    record["e2e"] = time.perf_counter() - record["sent"]
    if record["output_tokens"] is None:
        record["output_tokens"] = chunks_with_text
    if record["ttft"] is not None and record["output_tokens"] > 1:
        record["tpot"] = (record["e2e"] - record["ttft"]) / (record["output_tokens"] - 1)
    return record


def _count(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
