"""`harness serve` as a server (harness/serving), driven by the official `openai` client over real HTTP on loopback,
with the real model in this process (uvicorn on a thread): concurrent requests equal the same requests one by one,
streams add up to the whole answer, usage is counted, bad input is a 400 that names the field, a full queue is a 429,
a client that leaves has its work cancelled, and the body size and API key are enforced.

No test waits on the clock to decide an outcome: the server's state is read from its /metrics endpoint, and a wait
is only bounded by a deadline far beyond what the work takes."""

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import uvicorn

from harness.engine.requests import GenerateRequest
from harness.models.registry import load_model
from harness.serving.server import ServerSettings, make_app
from harness.systems.profiler import Profiler

pytestmark = pytest.mark.slow  # the real model behind a real server

KEY = "test-key"
DEADLINE_S = 300  # only a bound on a server that never gets there: each wait below takes well under a second
PROMPTS = ["The capital of France is", "Once upon a time, in a land far away,", "def fibonacci(n):",
           "Question: What is 12 plus 7?\nAnswer:", "A list of fruits: apple, banana,", "1, 2, 3, 4,",
           "Translate to French: good morning ->", "In 1969, the first humans"]
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"  # the model goes on counting: a long generation that does not end early


class Server:
    def __init__(self, adapter, settings: ServerSettings):
        self.app = make_app(adapter, settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + DEADLINE_S
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive()
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.root = f"http://127.0.0.1:{port}"
        self.client = openai.OpenAI(base_url=f"{self.root}/v1", api_key=KEY, max_retries=0)

    def metric(self, name: str) -> float:
        for line in httpx.get(f"{self.root}/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)

    def wait_for(self, condition) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while not condition():
            assert time.monotonic() < deadline, "the server never got there"
            time.sleep(0.05)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


@pytest.fixture(scope="module")
def server(smollm2):
    running = Server(smollm2, ServerSettings(max_batch=8, max_queued=64, max_body_bytes=64 << 10, api_key=KEY))
    yield running
    running.close()


def complete(server: Server, prompt: str, **fields):
    return server.client.completions.create(model="smollm2-135m", prompt=prompt, temperature=0, **fields)


def test_concurrent_requests_equal_the_same_requests_one_by_one_token_for_token(server, smollm2):
    one_by_one = [complete(server, prompt, max_tokens=12, logprobs=0) for prompt in PROMPTS]
    # One request of eight prompts joins the batch as one: every step decodes the eight together.
    full_steps = server.metric('harness_step_batch_size_bucket{le="8.0"}') - \
        server.metric('harness_step_batch_size_bucket{le="4.0"}')
    listed = complete(server, PROMPTS, max_tokens=12, logprobs=0)
    assert server.metric('harness_step_batch_size_bucket{le="8.0"}') - \
        server.metric('harness_step_batch_size_bucket{le="4.0"}') > full_steps
    # Eight clients at once: they join as they come, at whatever step.
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(lambda prompt: complete(server, prompt, max_tokens=12, logprobs=0), PROMPTS))
    for alone, batched, in_list in zip(one_by_one, together, listed.choices):
        assert batched.choices[0].text == alone.choices[0].text == in_list.text
        assert batched.choices[0].logprobs.tokens == alone.choices[0].logprobs.tokens == in_list.logprobs.tokens
    # And both are what the model generates in an evaluation.
    local = smollm2.generate([GenerateRequest(prompt, max_tokens=12) for prompt in PROMPTS])
    assert [reply.choices[0].text for reply in together] == [generation.text for generation in local]
    assert [reply.usage.completion_tokens for reply in together] == \
        [len(g.tokens) + (g.finish == "eos") for g in local]
    assert [reply.usage.prompt_tokens for reply in together] == [len(smollm2.encode(p)) for p in PROMPTS]


def test_a_stream_adds_up_to_the_whole_answer_and_ends_with_its_usage(server):
    # A stop string of several tokens: the stream must not send its first characters before it is known.
    fields = {"max_tokens": 40, "stop": ["6, 7"]}
    whole = complete(server, "1, 2, 3, 4,", **fields)
    chunks = list(complete(server, "1, 2, 3, 4,", stream=True, stream_options={"include_usage": True}, **fields))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text == " 5, "
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])


def test_a_chat_stream_names_the_role_first_and_adds_up_to_the_whole_message(server):
    body = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 12,
            "temperature": 0}
    whole = server.client.chat.completions.create(**body)
    chunks = list(server.client.chat.completions.create(**body, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    assert whole.usage.completion_tokens == 12 or whole.choices[0].finish_reason == "stop"


def test_logprobs_are_the_models_and_as_many_alternatives_as_asked(server):
    reply = complete(server, "The capital of France is", max_tokens=3, logprobs=3)
    logprobs = reply.choices[0].logprobs
    assert "".join(logprobs.tokens) == reply.choices[0].text
    assert all(len(top) == 3 for top in logprobs.top_logprobs)
    # Greedy: each chosen token is its position's most likely one.
    assert all(max(top.values()) == chosen for top, chosen in zip(logprobs.top_logprobs, logprobs.token_logprobs))
    assert logprobs.text_offset == [0, len(logprobs.tokens[0]), len(logprobs.tokens[0]) + len(logprobs.tokens[1])]


@pytest.mark.parametrize("fields, named", [
    ({"max_tokens": 10**9}, "window"),
    ({"max_tokens": 8192}, "window"),  # the prompt's tokens and these do not fit: it would be cut silently
    ({"top_p": 0}, "top_p"),
    ({"temperature": -1}, "temperature"),
    ({"n": 0}, "n"),
    ({"n": 500}, "n"),
    ({"logprobs": 21}, "logprobs"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"best_of": 3}, "best_of"),
    ({"stop": [""]}, "stop"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"tools": []}, "tools"),
    ({"max_tokens": 0}, "echo"),
    ({"echo": True, "max_tokens": 3, "logprobs": 1}, "echo"),
])
def test_out_of_range_fields_are_a_400_that_names_them(server, fields, named):
    body = {"model": "smollm2-135m", "prompt": "Hello", "max_tokens": 2, **fields}
    reply = httpx.post(f"{server.root}/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert reply.status_code == 400
    assert named in reply.json()["error"]["message"]


def test_a_full_queue_is_a_429_and_a_client_that_leaves_has_its_work_cancelled(smollm2):
    server = Server(smollm2, ServerSettings(max_batch=1, max_queued=1, api_key=KEY))
    try:
        generated_before = server.metric("harness_generation_tokens_total")
        # One sequence decodes (the batch holds one), one waits (the queue holds one): the third is refused.
        running = server.client.completions.create(model="m", prompt=COUNTING, max_tokens=4000, stream=True,
                                                   temperature=0)
        next(iter(running))
        server.wait_for(lambda: server.metric("harness_batch_size") == 1)
        waiting = threading.Thread(target=lambda: complete(server, "Hello", max_tokens=2))
        waiting.start()
        server.wait_for(lambda: server.metric("harness_queue_depth") == 1)
        with pytest.raises(openai.RateLimitError) as refused:
            complete(server, "Hello", max_tokens=2)
        assert refused.value.response.headers["retry-after"] == "1"
        # The streaming client leaves: its sequence stops long before its 4,000 tokens, and the waiting one runs.
        running.close()
        waiting.join(timeout=DEADLINE_S)
        server.wait_for(lambda: server.metric("harness_batch_size") == 0)
        assert server.metric("harness_generation_tokens_total") - generated_before < 1000
        # A client of a whole (not streamed) answer that hangs up: the same.
        generated_before = server.metric("harness_generation_tokens_total")
        body = f'{{"prompt": "{COUNTING}", "max_tokens": 4000, "temperature": 0}}'.encode()
        with socket.create_connection(("127.0.0.1", int(server.root.rsplit(":", 1)[1]))) as connection:
            connection.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: "
                               + str(len(body)).encode() + b"\r\n\r\n" + body)
            server.wait_for(lambda: server.metric("harness_batch_size") == 1)
        server.wait_for(lambda: server.metric("harness_batch_size") == 0)
        assert server.metric("harness_generation_tokens_total") - generated_before < 1000
    finally:
        server.close()


def test_a_body_over_the_limit_is_a_413_declared_or_not(server):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    big = b'{"prompt": "' + b"a" * (128 << 10) + b'"}'
    assert httpx.post(f"{server.root}/v1/completions", content=big, headers=headers).status_code == 413
    chunked = httpx.post(f"{server.root}/v1/completions", content=iter([big[:1000], big[1000:]]), headers=headers)
    assert chunked.status_code == 413


def test_the_api_key_is_required_on_v1_only(server):
    assert httpx.get(f"{server.root}/v1/models").status_code == 401
    wrong = httpx.get(f"{server.root}/v1/models", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401 and "API key" in wrong.json()["error"]["message"]
    assert [model.id for model in server.client.models.list()] == ["smollm2-135m"]
    assert httpx.get(f"{server.root}/health").json() == {"status": "ok"}


def test_the_metrics_count_requests_and_tokens(server):
    before = server.metric("harness_generation_tokens_total")
    reply = complete(server, "Hello", max_tokens=3)
    assert server.metric("harness_generation_tokens_total") - before == reply.usage.completion_tokens
    text = httpx.get(f"{server.root}/metrics").text
    assert 'harness_requests_total{endpoint="/v1/completions",status="200"}' in text
    assert "harness_time_to_first_token_seconds_bucket" in text


def test_a_model_without_a_batch_is_served_one_at_a_time_with_the_same_answers(tmp_path, smollm2_folder):
    """transformers: has no reference model to batch: its requests are generated one by one, each whole, and a
    client is told so when it asks for what only the batch gives (log-probabilities of generated tokens)."""
    from harness.models.registry import load_model
    from tests.tiny import make_tiny_llama_folder

    folder = make_tiny_llama_folder(tmp_path / "tiny", smollm2_folder)
    peer = load_model(f"transformers:{folder}")
    server = Server(peer, ServerSettings(api_key=KEY))
    try:
        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda prompt: complete(server, prompt, max_tokens=6), PROMPTS[:4]))
        local = peer.generate([GenerateRequest(prompt, max_tokens=6) for prompt in PROMPTS[:4]])
        assert [reply.choices[0].text for reply in replies] == [generation.text for generation in local]
        assert server.metric('harness_step_batch_size_count') == 0  # no batch ever ran
        with pytest.raises(openai.BadRequestError, match="reference model"):
            complete(server, "Hello", max_tokens=2, logprobs=1)
    finally:
        server.close()


def test_continuous_usage_counts_the_tokens_so_far_in_every_chunk(server):
    """vLLM's `continuous_usage_stats` (guidellm asks for it): a client can tell how many tokens each chunk carried."""
    body = {"model": "m", "prompt": "1, 2, 3, 4,", "max_tokens": 10, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    with httpx.stream("POST", f"{server.root}/v1/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}) as reply:
        events = [json.loads(line[5:]) for line in reply.iter_lines() if line.startswith("data: {")]
    counts = [event["usage"]["completion_tokens"] for event in events]
    assert counts == sorted(counts) and counts[-1] == 10  # ignore_eos: exactly max_tokens
    assert all(event["usage"]["prompt_tokens"] == events[0]["usage"]["prompt_tokens"] for event in events)


def test_a_step_that_raises_fails_its_requests_with_a_500_and_the_next_ones_are_served(server, smollm2, monkeypatch):
    """A model step that raises (here the forward pass, whenever a planted token is in its input) leaves the batch in
    an unknown state: its requests are answered 500 with the reason, and the server goes on from an empty batch."""
    [planted] = smollm2.encode(" Zanzibar")[-1:]
    forward = smollm2.model.forward

    def failing_forward(input_ids, *args, **kwargs):
        if (input_ids == planted).any():
            raise RuntimeError("planted failure")
        return forward(input_ids, *args, **kwargs)

    monkeypatch.setattr(smollm2.model, "forward", failing_forward)
    with pytest.raises(openai.InternalServerError) as failed:
        complete(server, "The capital of Zanzibar", max_tokens=4)
    assert "planted failure" in failed.value.message
    server.wait_for(lambda: server.metric("harness_batch_size") == 0)
    after = complete(server, PROMPTS[0], max_tokens=6)
    monkeypatch.undo()
    [local] = smollm2.generate([GenerateRequest(PROMPTS[0], max_tokens=6)])
    assert after.choices[0].text == local.text


def test_a_speculative_server_answers_as_plain_decoding(smollm2):
    """`harness serve --speculative ngram=2,k=4`: clients arriving at once join the batch as they come, rows keep
    different numbers of drafts, and every greedy answer is the plain model's, token for token."""
    speculative = load_model("smollm2-135m", speculative="ngram=2,k=4")
    speculative.profiler = profiler = Profiler()
    running = Server(speculative, ServerSettings(max_batch=4, max_queued=64, max_body_bytes=64 << 10, api_key=KEY))
    prompts = [*PROMPTS, COUNTING]
    try:
        with ThreadPoolExecutor(len(prompts)) as pool:
            replies = list(pool.map(lambda prompt: complete(running, prompt, max_tokens=16, logprobs=0), prompts))
    finally:
        running.close()
    local = smollm2.generate([GenerateRequest(prompt, max_tokens=16) for prompt in prompts])
    assert [reply.choices[0].text for reply in replies] == [generation.text for generation in local]
    assert [reply.usage.completion_tokens for reply in replies] == [len(g.tokens) + (g.finish == "eos") for g in local]
    assert all(len(reply.choices[0].logprobs.tokens) == reply.usage.completion_tokens for reply in replies)
    assert profiler.summary()["run"]["speculation"]["accepted"] > 0  # the count goes on: drafts were kept
