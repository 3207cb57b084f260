"""The trusted judge processes (runner/judge.py): one per worker of the sandbox, each judging program after program.

A judge is started once and handed each program's job over a Unix socket, with the two pipe ends that reach that
program's candidate passed alongside (SCM_RIGHTS), so that a program costs one interpreter start-up (its
candidate's) rather than two. A judge that does not answer within the program's time and a grace period is killed
and replaced by a fresh one for the next program.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from queue import Queue

from harness.sandbox.walls import ENVIRONMENT, RUNNER_DIR

HEADER = 16  # bytes: the job's length as ASCII digits (runner/judge.py reads the same)
GRACE_S = 10.0  # the judge keeps the program's deadline itself; this only catches a judge that hangs


class Judge:
    def __init__(self, memory_bytes: int):
        self.connection, theirs = socket.socketpair()
        # Whatever the tests print is of no use to anyone: the judge's output goes nowhere.
        self.process = subprocess.Popen(
            [sys.executable, "-E", "-s", "-S", str(RUNNER_DIR / "judge.py"), str(theirs.fileno()), str(memory_bytes)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENVIRONMENT,
            pass_fds=(theirs.fileno(),))
        theirs.close()

    def judge(self, job: dict, candidate_fds: list[int], timeout_s: float) -> dict | None:
        """The verdict of one program; None when the judge did not answer in time or died (then it is closed)."""
        body = json.dumps(job).encode()
        try:
            self.connection.settimeout(timeout_s + GRACE_S)
            socket.send_fds(self.connection, [b"%0*d" % (HEADER, len(body))], candidate_fds)
            self.connection.sendall(body)
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = self.connection.recv(4096)
                if not chunk:
                    raise ConnectionError("the judge ended")
                answer += chunk
            verdict = json.loads(answer)
            return {"status": verdict["status"], "error_type": verdict.get("error_type")}
        except (OSError, ValueError, KeyError):  # a timeout is an OSError too
            self.close()
            return None

    def close(self) -> None:
        self.connection.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None and self.connection.fileno() >= 0


class JudgePool:
    """At most one judge per worker thread, started when first needed."""

    def __init__(self, memory_bytes: int, workers: int):
        self.memory_bytes = memory_bytes
        self.idle: Queue = Queue()
        for _ in range(workers):
            self.idle.put(None)
        self.started: list[Judge] = []

    def take(self) -> Judge:
        judge = self.idle.get()
        if judge is None or not judge.alive:
            judge = Judge(self.memory_bytes)
            self.started.append(judge)
        return judge

    def give_back(self, judge: Judge) -> None:
        self.idle.put(judge)

    def close(self) -> None:
        for judge in self.started:
            judge.close()
