"""What keys an `openai:` model's cached answers: what the server says about the model (its /v1/models entry's
identifying fields and its system_fingerprint) and the revision the user pins, never the name alone. Against a
real HTTP server on loopback whose answers each test sets; no model is loaded."""

import http.server
import json
import threading

import pytest

from harness.errors import UserError
from harness.models.openai_api import OpenAIAdapter


class Server(http.server.ThreadingHTTPServer):
    """Answers /v1/models with `entry` and every completion with `system_fingerprint` (None: the field left out)."""

    def __init__(self):
        self.entry = {"id": "m", "object": "model", "owned_by": "someone"}
        self.system_fingerprint: str | None = "fp_a"
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.reply({"object": "list", "data": [self.server.entry]})

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        reply = {"object": "text_completion", "choices": [{"index": 0, "text": " x", "finish_reason": "length"}]}
        if self.server.system_fingerprint is not None:
            reply["system_fingerprint"] = self.server.system_fingerprint
        self.reply(reply)

    def reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server():
    server = Server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def fingerprint(server: Server, revision: str | None = None, said: list | None = None) -> str:
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    adapter = OpenAIAdapter(f"openai:m@{url}", "m", url, revision=revision,
                            progress=(said.append if said is not None else print))
    try:
        return adapter.fingerprint
    finally:
        adapter.close()


def test_a_redeployment_the_server_reports_misses_the_cache(server):
    first = fingerprint(server)
    assert fingerprint(server) == first  # the same deployment, asked again
    server.system_fingerprint = "fp_b"
    assert fingerprint(server) != first


def test_the_listing_keys_what_describes_the_model_and_not_what_changes_by_the_request(server):
    first = fingerprint(server)
    server.entry = {**server.entry, "created": 12345, "permission": [{"id": "modelperm-9"}]}  # vLLM: per request
    assert fingerprint(server) == first
    server.entry = {**server.entry, "root": "/models/llama-3-8b-awq"}  # vLLM: the weights it serves
    assert fingerprint(server) != first


def test_a_pinned_revision_keys_the_answers(server):
    assert fingerprint(server, revision="r1") != fingerprint(server, revision="r2")
    assert fingerprint(server, revision="r1") == fingerprint(server, revision="r1")


def test_a_server_that_says_nothing_is_keyed_on_the_name_with_a_warning(server):
    server.system_fingerprint = None
    said: list[str] = []
    fingerprint(server, said=said)
    assert len(said) == 1 and "pass --revision" in said[0]
    said.clear()
    fingerprint(server, revision="deploy-7", said=said)
    assert said == []


def test_a_redeployment_during_the_run_stops_it(server):
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    adapter = OpenAIAdapter(f"openai:m@{url}", "m", url)
    adapter.fingerprint  # noqa: B018 - the cache key is taken before the first request
    server.system_fingerprint = "fp_b"
    with pytest.raises(UserError, match="changed its system_fingerprint during the run"):
        adapter._post("/completions", {"model": "m", "prompt": "Hi", "max_tokens": 1})
    adapter.close()


def test_revision_and_max_length_are_refused_where_they_mean_nothing(server, tmp_path, capsys):
    from harness.cli import main

    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    for model, flag, said in [(f"openai:m@{url}", ["--max-length", "16"], "--max-length applies to models that run"),
                              ("hf:/nonexistent", ["--revision", "r1"], "--revision applies to openai: models")]:
        code = main(["run", "--model", model, "--tasks", "mmlu_anatomy", "--output", str(tmp_path / "run"), *flag])
        error = capsys.readouterr().err
        assert code == 2 and said in error and "Traceback" not in error, error
