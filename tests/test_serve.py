"""`harness serve` and the `openai:` adapter end to end, over real HTTP on loopback: the same numbers as the local
model, samples of one prompt that differ and repeat with the seed, and a run that completes correctly through a proxy
that answers 429 and 500, drops a connection and stalls past the client's timeout."""

import http.server
import select
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import torch

from harness.cli import main
from harness.engine.requests import GenerateRequest
from harness.models.registry import load_model
from harness.record.run_folder import read_run
from tests.fp32 import logprob_tolerance

pytestmark = pytest.mark.slow  # a server process with its own copy of the real model, and whole runs through it


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "harness", "serve", "--model", "smollm2-135m", "--port",
                                str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 600  # only a bound on a server that never comes up: loading takes seconds
    while True:
        try:
            if httpx.get(f"{url}/models").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=30)


def run(tmp_path, name, model, *tasks_and_flags) -> tuple[dict, list[dict]]:
    assert main(["run", "--model", model, "--output", str(tmp_path / name), *tasks_and_flags]) == 0
    return read_run(tmp_path / name)


def assert_same_numbers(remote: list[dict], local: list[dict], model) -> None:
    assert [(s["task"], s["doc_id"]) for s in remote] == [(s["task"], s["doc_id"]) for s in local]
    for mine, theirs in zip(remote, local):
        assert mine["scores"] == theirs["scores"]
        if mine["task"].startswith("mmlu"):
            # fp32 on both sides, in other batches (the server scores one prompt at a time): each answer, one token
            # (" A" to " D"), within the bound of tests/fp32.py for the logits where it is predicted.
            with torch.inference_mode():
                size = model.model(torch.tensor([model.encode(theirs["prompt"])]))[0, -1].abs().max().item()
            for a, b in zip(mine["response"], theirs["response"]):
                assert abs(a["logprob"] - b["logprob"]) <= logprob_tolerance(1, size)
                assert a["is_greedy"] == b["is_greedy"]
        else:
            assert mine["response"] == theirs["response"]


def test_mmlu_and_gsm8k_through_the_server_equal_the_local_run(tmp_path, server, runs_share_smollm2, smollm2):
    flags = ["--tasks", "mmlu_anatomy,gsm8k", "--limit", "mmlu_anatomy=5,gsm8k=2"]  # GSM8K: ~3 s a generation
    remote, remote_samples = run(tmp_path, "remote", f"openai:smollm2-135m@{server}", *flags)
    local, local_samples = run(tmp_path, "local", "smollm2-135m", *flags)
    assert_same_numbers(remote_samples, local_samples, smollm2)
    assert remote["results"]["mmlu_anatomy"]["acc"] == local["results"]["mmlu_anatomy"]["acc"]
    assert remote["results"]["gsm8k"] == local["results"]["gsm8k"]
    assert remote["model"]["implementation"] == "openai-api"


def test_the_server_names_what_decides_its_answers(server, smollm2):
    """Its system_fingerprint is its model's fingerprint (weights, tokenizer and config files, answering code), which
    the openai: adapter keys its cache on: a redeployed model under the same name misses."""
    body = {"model": "smollm2-135m", "prompt": "Hi", "max_tokens": 1, "temperature": 0}
    reply = httpx.post(f"{server}/completions", json=body, timeout=600).json()
    assert reply["system_fingerprint"] == f"fp_{smollm2.fingerprint[:16]}"


def test_a_task_the_server_cannot_answer_is_named(tmp_path, server, capsys):
    assert main(["run", "--model", f"openai:smollm2-135m@{server}", "--tasks", "wikitext", "--limit", "1",
                 "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "wikitext needs loglikelihood_rolling" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


# Few tokens at temperature 0.8: four samples that all came out alike would mean they share one random stream.
SAMPLED = GenerateRequest("Once upon a time,", max_tokens=6, temperature=0.8)


@pytest.fixture
def remote(server):
    model = load_model(f"openai:smollm2-135m@{server}")
    yield model
    model.close()


def test_samples_of_one_prompt_differ_through_the_server_and_repeat_with_the_seed(remote):
    texts = remote.generate_until([SAMPLED] * 4, seed=1234)
    assert len(set(texts)) > 1, texts  # pass@k from identical samples would silently equal pass@1
    assert remote.generate_until([SAMPLED] * 4, seed=1234) == texts
    # Sent in parts, with the occurrences the evaluator passes, each sample draws the same text.
    assert remote.generate_until([SAMPLED] * 2, seed=1234, occurrences=[2, 3]) == texts[2:]


def test_each_sample_sends_its_own_seed_and_a_rerun_the_same_ones(remote, monkeypatch):
    sent = []
    post = remote._post
    monkeypatch.setattr(remote, "_post", lambda path, body: sent.append(body["seed"]) or post(path, body))

    def seeds(*args, **kwargs) -> list[int]:
        sent.clear()
        remote.generate_until(*args, **kwargs)
        return sorted(sent)  # requests go out concurrently: their order is not the list's

    first = seeds([SAMPLED] * 4, seed=1234)
    assert len(set(first)) == 4
    assert seeds([SAMPLED] * 4, seed=1234) == first
    assert sorted(seeds([SAMPLED] * 2, seed=1234, occurrences=[2, 3]) + seeds([SAMPLED] * 2, seed=1234)) == first
    assert set(seeds([SAMPLED] * 4, seed=1)).isdisjoint(first)


def test_the_server_samples_identical_prompts_of_one_request_apart(server):
    body = {"max_tokens": 6, "temperature": 0.8, "seed": 1234}
    listed = httpx.post(f"{server}/completions", json={**body, "prompt": ["Once upon a time,"] * 4}, timeout=600)
    texts = [choice["text"] for choice in listed.json()["choices"]]
    assert len(set(texts)) > 1, texts
    n = httpx.post(f"{server}/completions", json={**body, "prompt": "Once upon a time,", "n": 4}, timeout=600)
    assert [choice["text"] for choice in n.json()["choices"]] == texts
    assert [choice["index"] for choice in n.json()["choices"]] == [0, 1, 2, 3]


# The faulty run's client timeout (HARNESS_OPENAI_TIMEOUT). Which calls fail is decided by counting them, never by a
# race with the clock: the stalled call is held, unanswered, until the client gives up on it and hangs up, so this
# timeout is what ends it (the test waits for it once). Every honest call is one forward pass of the 135M model
# over one MMLU prompt (well under a second, several times that on a busy 2-core machine) behind at most one other
# (two calls in flight, the server's engine scoring one prompt at a time), far inside it. Even an honest call that
# did time out would only be retried: the run would end with the same numbers, later.
CLIENT_TIMEOUT_S = 15
CONCURRENCY = 2
HOLD_LIMIT_S = 600  # how long the proxy holds a stalled call at most: only a bound on a client that never gives up


class FaultyProxy(http.server.ThreadingHTTPServer):
    """Forwards to the server, except that the calls numbered in `faults` fail as named. server_close() waits for
    every call's thread (no daemon threads), so `delivered` is complete once it returns."""

    daemon_threads = False

    def __init__(self, target: str, faults: dict[int, str]):
        self.target, self.faults, self.calls, self.delivered = target, faults, 0, []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), ProxyHandler)


def hung_up(connection: socket.socket, limit_s: float) -> bool:
    """Waits until the peer closes `connection` (True), or `limit_s` passes (False)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        readable, _, _ = select.select([connection], [], [], 0.5)
        if readable:
            try:
                if not connection.recv(1024):
                    return True
            except OSError:  # reset by the peer
                return True
    return False


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.forward(None)

    def do_POST(self):
        self.forward(self.rfile.read(int(self.headers["Content-Length"])))

    def forward(self, body):
        proxy = self.server
        with proxy.lock:
            proxy.calls += 1
            fault = proxy.faults.get(proxy.calls)
        if fault in ("429", "500"):
            proxy.delivered.append(fault)
            self.send_response(int(fault))
            self.send_header("Retry-After", "0") if fault == "429" else None
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if fault == "drop":  # read the request, then hang up without an answer
            proxy.delivered.append(fault)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "stall":  # read the request, never answer; counted once the client has given up on it
            proxy.delivered.append("stall" if hung_up(self.connection, HOLD_LIMIT_S) else "stall never ended")
            self.close_connection = True
            return
        path = self.path.removeprefix("/v1")
        reply = httpx.request(self.command, proxy.target + path, content=body,
                              headers={"Content-Type": "application/json"}, timeout=HOLD_LIMIT_S)
        self.send_response(reply.status_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply.content)))
        self.end_headers()
        self.wfile.write(reply.content)


def test_a_run_through_faults_completes_with_the_same_numbers(tmp_path, server, monkeypatch, runs_share_smollm2,
                                                              smollm2):
    proxy = FaultyProxy(server, {2: "429", 3: "500", 5: "drop", 7: "stall", 9: "500", 10: "429"})
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    monkeypatch.setenv("HARNESS_OPENAI_TIMEOUT", str(CLIENT_TIMEOUT_S))
    monkeypatch.setenv("HARNESS_OPENAI_CONCURRENCY", str(CONCURRENCY))
    try:
        flags = ["--tasks", "mmlu_anatomy", "--limit", "4"]
        _, through_faults = run(tmp_path, "faulty", f"openai:smollm2-135m@http://127.0.0.1:{proxy.server_port}/v1",
                                *flags)
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert sorted(proxy.delivered) == sorted(["429", "500", "drop", "stall", "500", "429"])
    _, local = run(tmp_path, "local", "smollm2-135m", *flags)
    assert_same_numbers(through_faults, local, smollm2)
