"""Runs untrusted, model-written code and judges it from outside: each program in two processes, many in parallel.

For each program the harness starts the candidate, `runner/candidate.py` inside the kernel's walls
(harness/sandbox/walls.py: bubblewrap namespaces, a read-only system, a private scratch tmpfs, seccomp), with
resource limits; it loads the model-written code and answers calls to its entry point. The program is judged by
`runner/judge.py`, an ordinary trusted process (one per worker, harness/sandbox/judges.py) that runs the problem's
tests and calls the candidate through two pipes, with arguments and return values as plain data
(runner/wire.py).
The verdict is the judge's alone: nothing the program does can reach it except the values its function returns.
Where the kernel refuses the walls, the sandbox refuses to start unless weak isolation was asked for explicitly;
then the candidate runs as a plain process with its limits and an audit hook, and every outcome says so.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.config import SandboxConfig
from harness.engine.programs import Program, ProgramRunner
from harness.errors import UserError
from harness.sandbox.judges import JudgePool
from harness.sandbox.seccomp_filter import SeccompUnavailable, compile_filter
from harness.sandbox.walls import DESCRIPTION, ENVIRONMENT, RUNNER_DIR, RUNNER_FILES, find_walls

OUTPUT_KEPT = 2000  # characters of stdout and of stderr kept per run
WEAK_DESCRIPTION = "weak: own process and session, rlimits, audit hook; no kernel namespaces"


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 3.0  # wall clock per program, start-up included
    memory_mb: int = 1024  # address space of each process
    file_mb: int = 16  # largest file the program may write (its stdout and stderr included)
    scratch_mb: int = 64  # its private /tmp
    processes: int = 16  # processes and threads
    open_files: int = 64

    def rlimits(self) -> dict[str, int]:
        return {"RLIMIT_CPU": max(1, int(self.timeout_s) + 1), "RLIMIT_AS": self.memory_mb << 20,
                "RLIMIT_FSIZE": self.file_mb << 20, "RLIMIT_NPROC": self.processes,
                "RLIMIT_NOFILE": self.open_files, "RLIMIT_CORE": 0}


class Sandbox:
    """`run(programs)` returns one outcome per program: {"status": passed | failed | error | timed_out | crashed,
    "passed", "error_type", "stdout", "stderr", "duration_s", "isolation"}. `failed` is an AssertionError of the
    tests; `error` any other exception (named in error_type: the candidate's, SyntaxError, NotPlainData for a
    value that cannot cross); `crashed` the candidate ended without answering (os._exit, a signal, a limit)."""

    def __init__(self, limits: Limits = Limits(), workers: int | None = None, weak_isolation: bool = False,
                 audit_hook: bool = True):
        self.limits = limits
        self.audit_hook = audit_hook  # off in tests, to show that the kernel's walls hold alone
        self.workers = workers or min(8, 2 * (os.cpu_count() or 1))
        walls = find_walls()
        if isinstance(walls, str):
            self.walls, self.seccomp = None, b""
            missing = walls
        else:
            try:
                self.walls, self.seccomp, missing = walls, compile_filter(), ""
            except SeccompUnavailable as error:
                self.walls, self.seccomp, missing = None, b"", str(error)
        if self.walls is None and not weak_isolation:
            raise UserError(f"--allow-code-execution needs kernel isolation, which is missing here: {missing}; "
                            "install it, or add --allow-weak-isolation to run programs with process limits only")
        self.isolation = DESCRIPTION if self.walls else f"{WEAK_DESCRIPTION} ({missing})"
        self.judges = JudgePool(self.limits.memory_mb << 20, self.workers)
        self.runner_files = {name: (RUNNER_DIR / name).read_bytes() for name in RUNNER_FILES}
        self._private = Path(tempfile.mkdtemp(prefix="harness-sandbox-io-"))

    def describe(self) -> dict:
        return {"timeout_s": self.limits.timeout_s, "memory_mb": self.limits.memory_mb,
                "file_mb": self.limits.file_mb, "scratch_mb": self.limits.scratch_mb,
                "processes": self.limits.processes, "open_files": self.limits.open_files, "workers": self.workers,
                "isolation": self.isolation}

    def run(self, programs: list[Program], progress: Callable[[int], None] | None = None) -> list[dict]:
        def one(program: Program) -> dict:
            try:
                return self.run_one(program)
            finally:
                if progress:
                    progress(1)

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(one, programs))

    def run_one(self, program: Program) -> dict:
        io_dir = Path(tempfile.mkdtemp(dir=self._private))
        scratch = None if self.walls else Path(tempfile.mkdtemp(prefix="harness-sandbox-"))
        calls_read, calls_write = os.pipe()
        replies_read, replies_write = os.pipe()
        candidate_fds, judge_fds = [calls_read, replies_write], [calls_write, replies_read]
        if self.walls:
            seccomp = memory_file(self.seccomp)
            files = {name: memory_file(text) for name, text in self.runner_files.items()}
            candidate_fds += [seccomp, *files.values()]
        open_fds = candidate_fds + judge_fds
        candidate = None
        try:
            runner_args = [str(calls_read), str(replies_write), json.dumps(self.limits.rlimits()),
                           "audit" if self.audit_hook else "no-audit"]
            if self.walls:
                command = self.walls.command(runner_args, files, seccomp, self.limits.scratch_mb)
                environment, cwd, user = ENVIRONMENT, "/", self.walls.popen_user()
            else:
                command = [sys.executable, "-E", "-s", "-S", str(RUNNER_DIR / "candidate.py"), *runner_args]
                environment, cwd, user = dict(ENVIRONMENT, HOME=str(scratch), TMPDIR=str(scratch)), scratch, {}
            started = time.perf_counter()
            with open(io_dir / "stdout", "wb") as stdout, open(io_dir / "stderr", "wb") as stderr:
                candidate = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, cwd=cwd, env=environment,
                    start_new_session=True, pass_fds=candidate_fds, **user)
            for fd in candidate_fds:  # the candidate holds its ends: its exit must read as end of file
                open_fds.remove(fd)
                os.close(fd)
            job = {"code": program.code, "entry_point": program.entry_point, "context": program.context,
                   "tests": program.tests, "timeout_s": self.limits.timeout_s}
            judge = self.judges.take()
            try:
                outcome = judge.judge(job, judge_fds, self.limits.timeout_s)
            finally:
                self.judges.give_back(judge)
            close_all(open_fds)  # the judge holds its own copies now
            duration = time.perf_counter() - started
        finally:
            if candidate is not None:
                stop(candidate)
            close_all(open_fds)
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        if outcome is None:  # the judge hung past its grace period on a hostile value, and was replaced
            outcome = {"status": "timed_out", "error_type": "timeout"}
        outcome.update(passed=outcome["status"] == "passed", duration_s=round(duration, 3),
                       stdout=read_truncated(io_dir / "stdout"), stderr=read_truncated(io_dir / "stderr"),
                       isolation=self.isolation)
        shutil.rmtree(io_dir, ignore_errors=True)
        return outcome

    def close(self) -> None:
        self.judges.close()
        shutil.rmtree(self._private, ignore_errors=True)


def memory_file(data: bytes) -> int:
    """A descriptor bubblewrap reads `data` from, from the start (the seccomp filter, the runner's files)."""
    fd = os.memfd_create("harness-sandbox")  # close-on-exec: only the program it is passed to inherits it
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def close_all(fds: list[int]) -> None:
    """Closes each descriptor once: other threads reuse the numbers as soon as they are free."""
    while fds:
        os.close(fds.pop())


def stop(process: subprocess.Popen) -> None:
    """Kills a process and its group. Inside the walls that ends the PID namespace, and with it every process the
    program started; for weak isolation the group is all that can be reached."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.kill()
    except ProcessLookupError:
        pass
    process.wait()


def read_truncated(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(OUTPUT_KEPT + 1)
        size = os.fstat(handle.fileno()).st_size
    text = head[:OUTPUT_KEPT].decode("utf-8", "replace")
    return text + (f"\n[... {size - OUTPUT_KEPT} more bytes not kept]" if size > OUTPUT_KEPT else "")


def make_sandbox(config: SandboxConfig) -> Sandbox:
    """The sandbox a run or score-code asked for (--code-timeout, --code-workers, --allow-weak-isolation)."""
    if config.timeout_s <= 0:
        raise UserError("--code-timeout must be more than 0 seconds")
    return Sandbox(Limits(timeout_s=config.timeout_s), workers=config.workers,
                   weak_isolation=config.allow_weak_isolation)


def runner_with_progress(sandbox: Sandbox) -> ProgramRunner:
    """The function tasks are lent to run programs: the sandbox, with a progress bar."""
    # Deferred: apart from this progress bar the sandbox needs only the standard library and pyseccomp, and its
    # tests run it as an unprivileged user under the system's bare interpreter.
    from tqdm import tqdm

    def run_programs(programs: list[Program]) -> list[dict]:
        with tqdm(total=len(programs), desc="running code", unit="program", dynamic_ncols=True) as bar:
            return sandbox.run(programs, progress=bar.update)

    return run_programs
