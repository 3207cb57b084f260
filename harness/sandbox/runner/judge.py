"""The trusted side: runs a problem's tests against the sandboxed candidate and writes the verdict.

Run by the harness (never inside the sandbox) as `python -E -s -S judge.py SOCKET_FD MEMORY_BYTES`, one process
per worker of the sandbox, judging one program after another. Each job comes on the Unix socket as a 16-byte
length, then JSON {"code", "entry_point", "context", "tests", "timeout_s"}, with the two pipe ends that reach
that program's candidate passed alongside (SCM_RIGHTS). It sends the untrusted `code` to the candidate process
(runner/candidate.py) to load, runs the trusted `context` (HumanEval's prompt, whose helpers such as `poly` the
tests call) and `tests` here, with `candidate` bound to a proxy: each call sends its arguments across as plain
data and returns the plain value that comes back (wire.py). The verdict is decided in this process only, from
values; the program cannot reach it. It goes back on the socket as one JSON line:
{"status": passed | failed | error | timed_out | crashed, "error_type": ...}.

The values it receives are plain but may be large or slow to work with (a range of 10**9 the tests expand, a set
of colliding hashes): the judge keeps the program's deadline with a timer that interrupts whatever it is doing,
and runs under the program's memory limit, so that a hostile value costs it no more than the program itself may
spend (a MemoryError: an error of that program). A judge that still hangs is killed by the harness and replaced.
"""

import builtins
import json
import os
import resource
import select
import signal
import socket
import sys
import time

import wire

HEADER = 16  # bytes: the job's length, as ASCII digits


class TimedOut(BaseException):
    """The program's time ran out (BaseException: a test's `except Exception` cannot swallow it)."""


class Crashed(BaseException):
    """The candidate process ended without answering."""


class CandidateRaised(Exception):
    """The candidate raised an exception that is not one of Python's built-in ones."""


class Channel:
    def __init__(self, calls_fd: int, replies_fd: int, deadline: float):
        self.calls_fd, self.replies_fd, self.deadline = calls_fd, replies_fd, deadline
        self.buffer = b""

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimedOut()
        return left

    def send(self, message: tuple) -> None:
        data = memoryview(wire.encode(message).encode() + b"\n")
        while data:
            _, writable, _ = select.select([], [self.calls_fd], [], self.remaining())
            if writable:
                try:
                    data = data[os.write(self.calls_fd, data[:65536]):]
                except BrokenPipeError:
                    raise Crashed() from None

    def receive(self) -> tuple:
        while b"\n" not in self.buffer:
            if len(self.buffer) > wire.MAX_LINE:
                raise wire.NotPlainData("a reply larger than the limit")
            readable, _, _ = select.select([self.replies_fd], [], [], self.remaining())
            if readable:
                chunk = os.read(self.replies_fd, 65536)
                if not chunk:
                    raise Crashed()
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        message = wire.decode(line)
        if type(message) is not tuple or not message or message[0] not in ("loaded", "value", "raised"):
            raise wire.NotPlainData("malformed reply")
        return message


def reraise(message: tuple) -> None:
    """The candidate's exception, as the built-in exception of that name where there is one (so that a test
    expecting ValueError sees one), else CandidateRaised; the message is kept as text only."""
    name = message[1] if len(message) > 1 and type(message[1]) is str else "Exception"
    text = message[2] if len(message) > 2 and type(message[2]) is str else ""
    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception) and kind.__module__ == "builtins":
        try:
            error = kind(text)
        except Exception:  # noqa: BLE001 - a built-in exception whose constructor wants other arguments
            error = CandidateRaised(f"{name}: {text}")
    else:
        error = CandidateRaised(f"{name}: {text}")
    error.candidate_type = name
    raise error


def proxy(channel: Channel):
    def candidate(*args, **kwargs):
        channel.send(("call", args, kwargs))
        message = channel.receive()
        if message[0] == "value" and len(message) == 2:
            return message[1]
        reraise(message)

    return candidate


def judge(job: dict, channel: Channel) -> dict:
    channel.send(("load", job["code"], job["entry_point"]))
    loaded = channel.receive()
    if loaded[0] != "loaded":
        reraise(loaded)
    if not job["tests"]:
        return {"status": "passed"}
    namespace: dict = {}
    exec(compile(job["context"], "<context>", "exec"), namespace)
    namespace["candidate"] = proxy(channel)
    if job["entry_point"]:  # tests may call the function by its name too (HumanEval/33 calls sort_third)
        namespace[job["entry_point"]] = namespace["candidate"]
    exec(compile(job["tests"], "<tests>", "exec"), namespace)
    return {"status": "passed"}


def verdict(job: dict, channel: Channel) -> dict:
    try:
        return judge(job, channel)
    except TimedOut:
        return {"status": "timed_out", "error_type": "timeout"}
    except Crashed:
        return {"status": "crashed", "error_type": "exited without answering"}
    except AssertionError:
        return {"status": "failed", "error_type": "AssertionError"}
    except wire.NotPlainData as error:
        return {"status": "error", "error_type": "NotPlainData", "detail": str(error)}
    except Exception as error:  # noqa: BLE001 - the candidate's exception, or one the tests raised on its values
        name = getattr(error, "candidate_type", type(error).__name__)
        return {"status": "error", "error_type": "".join(c for c in name[:80] if c.isalnum() or c in "_.")}


def judge_one(job: dict, calls_fd: int, replies_fd: int) -> dict:
    """One program's verdict, within its deadline: a timer interrupts whatever the judge is doing when it passes."""
    def expire(signum, frame):
        raise TimedOut()

    signal.signal(signal.SIGALRM, expire)
    try:
        signal.setitimer(signal.ITIMER_REAL, job["timeout_s"])
        return verdict(job, Channel(calls_fd, replies_fd, time.monotonic() + job["timeout_s"]))
    except TimedOut:  # the timer fired between the tests and the verdict
        return {"status": "timed_out", "error_type": "timeout"}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        os.close(calls_fd)
        os.close(replies_fd)


def receive_job(connection: socket.socket) -> tuple[dict, list[int]] | None:
    """The next job and the candidate's two pipe ends, sent by the harness; None when it has closed."""
    header, fds, _, _ = socket.recv_fds(connection, HEADER, 2)
    if not header:
        return None
    while len(header) < HEADER:
        header += connection.recv(HEADER - len(header))
    body, size = b"", int(header)
    while len(body) < size:
        body += connection.recv(size - len(body))
    return json.loads(body), fds


def main() -> None:
    """Judges programs one after another for one of the sandbox's workers, so that each program costs one process
    start-up (the candidate's), not two."""
    connection = socket.socket(fileno=int(sys.argv[1]))
    memory = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    while (received := receive_job(connection)) is not None:
        job, (calls_fd, replies_fd) = received
        try:
            result = judge_one(job, calls_fd, replies_fd)
        except BaseException as error:  # noqa: B036 - a fault of the judge itself: said, and the judge goes on
            result = {"status": "error", "error_type": f"judge failed: {type(error).__name__}"}
        connection.sendall(json.dumps(result).encode() + b"\n")


if __name__ == "__main__":
    main()
