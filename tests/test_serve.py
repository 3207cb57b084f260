"""`harness serve` and the `openai:` adapter end to end, over real HTTP on loopback: the same numbers as the local
model, and a run that completes correctly through a proxy that answers 429 and 500, drops a connection and stalls
past the client's timeout."""

import http.server
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from harness.record.run_folder import read_run
from harness.cli import main


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
    deadline = time.monotonic() + 120
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


def assert_same_numbers(remote: list[dict], local: list[dict]) -> None:
    assert [(s["task"], s["doc_id"]) for s in remote] == [(s["task"], s["doc_id"]) for s in local]
    for mine, theirs in zip(remote, local):
        assert mine["scores"] == theirs["scores"]
        if mine["task"].startswith("mmlu"):
            for a, b in zip(mine["response"], theirs["response"]):
                # fp32 on both sides; only the batch composition differs (the server scores one prompt at a time).
                assert abs(a["logprob"] - b["logprob"]) <= 1e-4 and a["is_greedy"] == b["is_greedy"]
        else:
            assert mine["response"] == theirs["response"]


def test_mmlu_and_gsm8k_through_the_server_equal_the_local_run(tmp_path, server):
    flags = ["--tasks", "mmlu_anatomy,gsm8k", "--limit", "5"]
    remote, remote_samples = run(tmp_path, "remote", f"openai:smollm2-135m@{server}", *flags)
    local, local_samples = run(tmp_path, "local", "smollm2-135m", *flags)
    assert_same_numbers(remote_samples, local_samples)
    assert remote["results"]["mmlu_anatomy"]["acc"] == local["results"]["mmlu_anatomy"]["acc"]
    assert remote["results"]["gsm8k"] == local["results"]["gsm8k"]
    assert remote["model"]["implementation"] == "openai-api"


def test_a_task_the_server_cannot_answer_is_named(tmp_path, server, capsys):
    assert main(["run", "--model", f"openai:smollm2-135m@{server}", "--tasks", "wikitext", "--limit", "1",
                 "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "wikitext needs loglikelihood_rolling" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


class FaultyProxy(http.server.ThreadingHTTPServer):
    """Forwards to the server, except that the calls numbered in `faults` fail as named."""

    def __init__(self, target: str, faults: dict[int, str]):
        self.target, self.faults, self.calls, self.delivered = target, faults, 0, []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), ProxyHandler)


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
        if fault:
            proxy.delivered.append(fault)
        if fault in ("429", "500"):
            self.send_response(int(fault))
            self.send_header("Retry-After", "0") if fault == "429" else None
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if fault == "drop":  # read the request, then hang up without an answer
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "stall":
            time.sleep(3)  # past the client's 1 s timeout; the client has given up and retried
        path = self.path.removeprefix("/v1")
        reply = httpx.request(self.command, proxy.target + path, content=body,
                              headers={"Content-Type": "application/json"}, timeout=120)
        self.send_response(reply.status_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply.content)))
        self.end_headers()
        self.wfile.write(reply.content)


def test_a_run_through_faults_completes_with_the_same_numbers(tmp_path, server, monkeypatch):
    proxy = FaultyProxy(server, {2: "429", 3: "500", 5: "drop", 7: "stall", 9: "500", 10: "429"})
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    monkeypatch.setenv("HARNESS_OPENAI_TIMEOUT", "1")
    try:
        flags = ["--tasks", "mmlu_anatomy", "--limit", "4"]
        _, through_faults = run(tmp_path, "faulty", f"openai:smollm2-135m@http://127.0.0.1:{proxy.server_port}/v1",
                                *flags)
    finally:
        proxy.shutdown()
    assert sorted(proxy.delivered) == sorted(["429", "500", "drop", "stall", "500", "429"])
    _, local = run(tmp_path, "local", "smollm2-135m", *flags)
    assert_same_numbers(through_faults, local)
