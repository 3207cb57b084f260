"""What every request passes before an endpoint sees it, as plain ASGI middleware (Starlette's BaseHTTPMiddleware
would hide a client's disconnect from the endpoints, which cancel on it):

  - CountAndAuthorize: counts each answer by path and status (harness_requests_total) and, with an API key, answers
    401 on /v1 to a request without `Authorization: Bearer KEY`;
  - BodySizeLimit: a declared Content-Length over the limit is refused before the body is read; a body sent without
    one (chunked) is read here, and refused as soon as it passes the limit. Both are a 413.
"""

from __future__ import annotations

import hmac
import json


def error_body(status: int, message: str) -> bytes:
    kind = {400: "invalid_request_error", 401: "authentication_error", 413: "invalid_request_error",
            429: "rate_limit_error"}.get(status, "server_error")
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": status}}).encode()


async def send_error(send, status: int, message: str) -> None:
    body = error_body(status, message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class CountAndAuthorize:
    def __init__(self, app, api_key: str | None, requests_counter):
        self.app, self.api_key, self.requests = app, api_key, requests_counter

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]

        async def counting_send(message):
            if message["type"] == "http.response.start":
                self.requests.labels(path, str(message["status"])).inc()
            await send(message)

        if self.api_key and path.startswith("/v1"):
            given = dict(scope.get("headers") or []).get(b"authorization", b"").removeprefix(b"Bearer ").strip()
            if not hmac.compare_digest(given, self.api_key.encode()):
                await send_error(counting_send, 401, "a valid API key is needed: Authorization: Bearer KEY")
                return
        await self.app(scope, receive, counting_send)


class BodySizeLimit:
    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.max_bytes:
                await send_error(send, 413, f"the request body is larger than {self.max_bytes} bytes")
                return
            await self.app(scope, receive, send)
            return
        # No length declared: read the body up to the limit, then hand the app what was read.
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await send_error(send, 413, f"the request body is larger than {self.max_bytes} bytes")
                return
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)
