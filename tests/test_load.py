"""`harness load` (harness/load): arrival schedules with the moments they promise, SLO expressions, the client's
records against servers that misbehave (real HTTP servers on loopback), and a whole load run against `harness serve`
on the real model."""

import asyncio
import http.server
import json
import threading

import httpx
import numpy as np
import pytest

from harness.cli import main
from harness.errors import UserError
from harness.load.client import send
from harness.load.schedule import arrival_times, schedule_rate
from harness.load.slo import meets, parse_slo
from harness.load.summary import summarize


def test_a_constant_schedule_is_exact_and_a_drawn_one_repeats_with_its_seed():
    assert arrival_times(4.0, 5, "constant") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert schedule_rate(arrival_times(4.0, 5, "constant")) == 4.0
    assert arrival_times(3.0, 50, "poisson", seed=7) == arrival_times(3.0, 50, "poisson", seed=7)
    assert arrival_times(3.0, 50, "poisson", seed=7) != arrival_times(3.0, 50, "poisson", seed=8)


@pytest.mark.parametrize("arrival, burstiness", [("poisson", 1.0), ("gamma", 0.25), ("gamma", 4.0)])
def test_drawn_gaps_have_the_rate_and_burstiness_asked_for(arrival, burstiness):
    """Gamma gaps of shape k and mean 1/rate have a coefficient of variation cv = 1/sqrt(k) (Poisson: k = 1). Over n
    gaps the sample mean's relative standard error is cv/sqrt(n); the sample standard deviation's is about
    sqrt((kurtosis - 1) / 4n), the gamma's kurtosis being 3 + 6/k. Each is asserted within 5 standard errors."""
    n, rate = 40_000, 20.0
    gaps = np.diff(arrival_times(rate, n + 1, arrival, burstiness, seed=1))
    cv = 1 / np.sqrt(burstiness)
    assert abs(gaps.mean() * rate - 1) < 5 * cv / np.sqrt(n)
    spread_error = np.sqrt((2 + 6 / burstiness) / (4 * n)) + cv / np.sqrt(n)  # the std's and the mean's
    assert abs(gaps.std() / gaps.mean() / cv - 1) < 5 * spread_error


def test_slo_expressions_parse_to_seconds_and_bad_ones_say_what_is_wrong():
    assert parse_slo("ttft<=500ms, tpot<=50ms,e2e<=2s") == {"ttft": 0.5, "tpot": 0.05, "e2e": 2.0}
    for bad, named in [("ttft<500ms", "ttft<500ms"), ("latency<=1s", "latency"), ("ttft<=1s,ttft<=2s", "twice"),
                       ("ttft<=0ms", "zero"), ("", "''")]:
        with pytest.raises(UserError, match=named):
            parse_slo(bad)


def record(**fields) -> dict:
    base = {"scheduled": 0.0, "sent": 0.0, "ttft": 0.1, "tpot": 0.01, "itl": [0.01], "e2e": 0.2,
            "input_tokens": 10, "output_tokens": 11, "error": None}
    return {**base, **fields}


def test_a_request_meets_the_slo_on_every_bound_and_a_failed_one_never_does():
    slo = parse_slo("ttft<=150ms,itl<=20ms")
    assert meets(record(), slo)
    assert not meets(record(ttft=0.2), slo)
    assert not meets(record(itl=[0.01, 0.03]), slo)  # itl is bounded at its worst gap
    assert not meets(record(error="HTTP 500"), slo)
    assert meets(record(tpot=None, itl=[]), slo)  # a one-token answer has no tpot: it does not count against it


def test_the_summary_counts_throughput_goodput_and_whether_the_schedule_was_kept():
    # Ten requests scheduled 0.1 s apart, each sent on time and taking 0.2 s, one of them failed, one slow.
    records = [record(scheduled=i / 10, sent=i / 10, ttft=0.5 if i == 3 else 0.1) for i in range(10)]
    records[5] = record(scheduled=0.5, sent=0.5, error="HTTP 500", e2e=None, ttft=None)
    summary = summarize(records, 10.0, None, parse_slo("ttft<=200ms"), client_cpu_s=0.05)
    assert (summary["completed"], summary["failed"]) == (9, 1)
    assert summary["duration_s"] == pytest.approx(1.1)  # first sent at 0, last (sent at 0.9) done at 1.1
    assert summary["output_token_throughput"] == pytest.approx(9 * 11 / 1.1)
    assert summary["slo_attainment"] == pytest.approx(0.8) and summary["goodput"] == pytest.approx(8 / 1.1)
    assert summary["sent_rate"] == pytest.approx(10.0) and summary["kept_schedule"] is True
    late = [dict(r, sent=r["scheduled"] + (0.05 if i > 5 else 0)) for i, r in enumerate(records)]
    assert summarize(late, 10.0, None, {}, 0.05)["kept_schedule"] is False  # 50 ms late on a 100 ms gap


class ScriptedServer(http.server.ThreadingHTTPServer):
    """Answers every POST with `script(handler)`, to play a server that misbehaves."""

    def __init__(self, script):
        self.script = script
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server_port}/v1"


class ScriptedHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.script(self)


def stream(handler, events: list, done: bool = True):
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.end_headers()
    for event in events:
        handler.wfile.write(f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n".encode())
    if done:
        handler.wfile.write(b"data: [DONE]\n\n")


def chunk(text: str) -> dict:
    return {"choices": [{"index": 0, "text": text}]}


def send_once(script) -> dict:
    server = ScriptedServer(script)
    try:
        async def one():
            async with httpx.AsyncClient() as client:
                return await send(client, server.url, {"prompt": "x", "max_tokens": 10}, 0.0)
        return asyncio.run(one())
    finally:
        server.shutdown()
        server.server_close()


def test_tokens_are_counted_from_usage_when_a_chunk_carries_several():
    usage = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 10, "total_tokens": 17}}
    got = send_once(lambda h: stream(h, [{"choices": [{"index": 0, "text": ""}]}, chunk("one two three"),
                                         chunk(" four ... ten"), usage]))
    assert got["error"] is None and (got["input_tokens"], got["output_tokens"]) == (7, 10)
    assert len(got["itl"]) == 1  # two chunks with text: one gap (the empty first chunk is not a token)
    assert got["tpot"] == pytest.approx((got["e2e"] - got["ttft"]) / 9)
    assert 0 < got["header_delay"] < got["ttft"]  # the headers left before anything came back


@pytest.mark.parametrize("script, reason", [
    (lambda h: (h.send_response(503), h.send_header("Content-Length", "4"), h.end_headers(), h.wfile.write(b"busy")),
     "HTTP 503: busy"),
    (lambda h: stream(h, [chunk("a"), "{not json"]), "JSONDecodeError"),
    (lambda h: stream(h, [chunk("a"), "[1, 2]"]), "not a JSON object"),
    (lambda h: stream(h, [chunk("a"), {"error": {"message": "boom"}}]), "boom"),
    (lambda h: stream(h, [chunk("a")], done=False), "before [DONE]"),
])
def test_a_server_that_misbehaves_fails_the_request_with_a_reason(script, reason):
    got = send_once(script)
    assert reason in got["error"] and got["e2e"] is None


@pytest.mark.parametrize("flags, message", [
    (["--rate", "0"], "> 0"),
    (["--rate", "2", "--slo", "ttft<500ms"], "METRIC<=BOUND"),
    (["--find-max-rate", "4:2", "--slo", "ttft<=1s"], "LOW must be below HIGH"),
    (["--find-max-rate", "1:2"], "give --slo"),
])
def test_bad_input_is_one_line_and_exit_2(flags, message, capsys):
    try:
        code = main(["load", "--url", "http://127.0.0.1:9/v1", *flags])
    except SystemExit as exit:  # argparse's own checks exit from the parser
        code = exit.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_an_unreachable_server_is_one_line_and_exit_2(capsys):
    assert main(["load", "--url", "http://127.0.0.1:9/v1", "--rate", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot list its models" in err and len(err.splitlines()) == 1


@pytest.mark.slow  # the real model behind a real server, 12 requests
def test_a_load_run_against_harness_serve_counts_every_token(tmp_path, smollm2):
    from tests.test_serving import Server
    from harness.serving.server import ServerSettings

    server = Server(smollm2, ServerSettings())
    try:
        output = tmp_path / "load"
        assert main(["load", "--url", f"{server.root}/v1", "--api-key", "test-key", "--rate", "4", "--requests", "12",
                     "--input-tokens", "32", "--output-tokens", "8", "--arrival", "constant", "--slo", "e2e<=60s",
                     "--output", str(output)]) == 0
    finally:
        server.close()
    [point] = json.loads((output / "load.json").read_text())["points"]
    assert (point["completed"], point["failed"]) == (12, 0)
    assert point["total_input_tokens"] == 12 * 32 and point["total_output_tokens"] == 12 * 8  # exact lengths
    assert point["slo_attainment"] == 1.0
    records = [json.loads(line) for line in (output / "requests.jsonl").read_text().splitlines()]
    assert len(records) == 12 and all(r["ttft"] <= r["e2e"] for r in records)
    assert (output / "load.csv").read_text().startswith("requested_rate,")
