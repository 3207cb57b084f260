"""Runs untrusted, model-written code: each program in its own process, many in parallel.

Each run gets:
  - its own process, session and process group (killed as a whole at the wall-clock timeout);
  - a fresh temporary working directory, removed afterwards;
  - a scrubbed environment, stdin from /dev/null, stdout and stderr captured to files and truncated;
  - `python -I -S`: no user site, no site-packages, no PYTHON* variables;
  - inside the child (harness/sandbox/child.py, which runs before any untrusted code): resource limits, a network
    namespace where the kernel allows one, an unprivileged uid of its own when the harness runs as root, and an
    audit hook refusing process creation, signals, sockets, ctypes and writes outside the working directory.
When the harness runs as root, each worker slot has its own uid, and every process left with that uid is killed
after the run, so nothing a program starts outlives it.

The verdict comes only from the child's report on a private pipe, stamped with a nonce the untrusted code never
sees; exiting early, being killed or printing anything reads as a failure, never as a pass.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Queue
from typing import Callable

from harness.config import SandboxConfig
from harness.errors import UserError

CHILD_SOURCE = (Path(__file__).parent / "child.py").read_text(encoding="utf-8")
OUTPUT_KEPT = 2000  # characters of stdout and of stderr kept per run
SCRUBBED_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 3.0  # wall clock per program, start-up included
    memory_mb: int = 1024  # address space
    file_mb: int = 16  # largest file the program may write (its stdout and stderr included)
    processes: int = 16  # for its own uid (threads count); a backstop, since the audit hook refuses fork
    open_files: int = 64


class Sandbox:
    """`run(programs)` returns one outcome per program, each a list of code parts run in order in one namespace:
    {"status": passed | failed | error | timed_out | crashed, "passed": bool, "error_type", "stdout", "stderr",
    "duration_s"}. `failed` is an AssertionError; `error` any other exception (named in error_type, SystemExit
    included); `crashed` an exit without a report (os._exit, a signal, a limit)."""

    def __init__(self, limits: Limits = Limits(), workers: int | None = None, audit_hook: bool = True):
        self.limits = limits
        self.audit_hook = audit_hook  # off only in tests, to check that the operating system's layers hold alone
        self.workers = workers or min(8, 2 * (os.cpu_count() or 1))
        self.isolation: str | None = None
        # Distinct uids per harness process and per worker, well above any real account.
        base = 1_500_000_000 + (os.getpid() % 100_000) * 64
        self._uids: Queue = Queue()
        self.python, own_uids = choose_interpreter()
        for slot in range(self.workers):
            self._uids.put(base + slot if own_uids else None)
        self._private = Path(tempfile.mkdtemp(prefix="harness-sandbox-io-"))

    def describe(self) -> dict:
        if self.isolation is None:
            self.run([["pass"]])
        return {"timeout_s": self.limits.timeout_s, "memory_mb": self.limits.memory_mb,
                "file_mb": self.limits.file_mb, "processes": self.limits.processes,
                "open_files": self.limits.open_files, "workers": self.workers, "python": self.python,
                "isolation": self.isolation}

    def run(self, programs: list[list[str]], progress: Callable[[int], None] | None = None) -> list[dict]:
        def one(parts: list[str]) -> dict:
            uid = self._uids.get()
            try:
                return self.run_one(parts, uid)
            finally:
                self._uids.put(uid)
                if progress:
                    progress(1)

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(one, programs))

    def run_one(self, parts: list[str], uid: int | None) -> dict:
        limits = self.limits
        nonce = secrets.token_hex(16)
        workdir = Path(tempfile.mkdtemp(prefix="harness-sandbox-"))
        io_dir = Path(tempfile.mkdtemp(dir=self._private))
        read_end, write_end = os.pipe()
        job = {"parts": parts, "nonce": nonce, "uid": uid, "report_fd": write_end, "audit_hook": self.audit_hook,
               "cpu_seconds": max(1, int(limits.timeout_s) + 1), "memory_bytes": limits.memory_mb << 20,
               "file_bytes": limits.file_mb << 20, "processes": limits.processes, "open_files": limits.open_files}
        try:
            if uid is not None:
                os.chown(workdir, uid, uid)
            with open(io_dir / "stdout", "wb") as stdout, open(io_dir / "stderr", "wb") as stderr:
                process = subprocess.Popen(
                    [self.python, "-I", "-S", "-c", CHILD_SOURCE], stdin=subprocess.PIPE, stdout=stdout,
                    stderr=stderr, cwd=workdir, env=dict(SCRUBBED_ENV, HOME=str(workdir), TMPDIR=str(workdir)),
                    start_new_session=True, pass_fds=(write_end,), close_fds=True)
            os.close(write_end)
            write_end = -1
            reports = ReportReader(read_end, nonce)
            started = time.perf_counter()
            timed_out = False
            try:
                process.communicate(json.dumps(job).encode(), timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            except BrokenPipeError:
                pass  # it died before reading its job
            duration = time.perf_counter() - started
            kill_group(process.pid)
            process.wait()
            if uid is not None:
                kill_uid(uid)
            report = reports.finish()
            if report.isolation:
                self.isolation = report.isolation
            outcome = verdict(report.status, report.detail, timed_out, process.returncode)
            outcome["duration_s"] = round(duration, 3)
            outcome["stdout"] = read_truncated(io_dir / "stdout")
            outcome["stderr"] = read_truncated(io_dir / "stderr")
            return outcome
        finally:
            if write_end >= 0:
                os.close(write_end)
            os.close(read_end)
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.rmtree(io_dir, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self._private, ignore_errors=True)


class ReportReader:
    """Reads the child's reports in a thread (so a chatty child never blocks), keeping only nonce lines."""

    def __init__(self, fd: int, nonce: str):
        self.fd, self.nonce = fd, nonce
        self.isolation = self.status = self.detail = None
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        total = 0
        while chunk := os.read(self.fd, 65536):
            total += len(chunk)
            if total <= 1 << 20:
                self._chunks.append(chunk)

    def finish(self) -> "ReportReader":
        self._thread.join(timeout=5)
        for line in b"".join(self._chunks).decode("utf-8", "replace").splitlines():
            words = line.split(" ", 2)
            if len(words) < 2 or words[0] != self.nonce:
                continue
            if words[1] == "isolation":
                self.isolation = words[2] if len(words) > 2 else ""
            else:
                self.status, self.detail = words[1], (words[2] if len(words) > 2 else "")
        return self


def verdict(status: str | None, detail: str | None, timed_out: bool, returncode: int) -> dict:
    if status in ("passed", "failed", "error"):
        return {"status": status, "passed": status == "passed",
                "error_type": "AssertionError" if status == "failed" else (detail or None)}
    if timed_out:
        return {"status": "timed_out", "passed": False, "error_type": "timeout"}
    how = f"signal {signal.Signals(-returncode).name}" if returncode < 0 else f"exit code {returncode}"
    return {"status": "crashed", "passed": False, "error_type": f"exited without a report ({how})"}


def choose_interpreter() -> tuple[str, bool]:
    """The Python that runs programs, and whether each program gets a uid of its own.

    Only root can switch uids, and an unprivileged uid can only run a Python whose standard library it can read;
    pyenv's (under /root) it cannot. Then a system Python of the same version serves, when there is one."""
    if os.geteuid() != 0:
        return sys.executable, False
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        if os.access(python, os.X_OK) and stdlib_readable_by_others(python):
            return python, True
    return sys.executable, False


def stdlib_readable_by_others(python: str) -> bool:
    probe = subprocess.run([python, "-I", "-S", "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return False
    stdlib = Path(probe.stdout.strip()).resolve()
    chain = [stdlib, *stdlib.parents]
    return bool(stdlib.stat().st_mode & stat.S_IROTH) and all(p.stat().st_mode & stat.S_IXOTH for p in chain)


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_uid(uid: int) -> None:
    """Kills every process owned by `uid` (a worker slot's own uid): whatever a program left behind."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid == uid:
                os.kill(int(entry.name), signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue


def read_truncated(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(OUTPUT_KEPT + 1)
        size = os.fstat(handle.fileno()).st_size
    text = head[:OUTPUT_KEPT].decode("utf-8", "replace")
    return text + (f"\n[... {size - OUTPUT_KEPT} more bytes not kept]" if size > OUTPUT_KEPT else "")


def make_sandbox(config: SandboxConfig) -> Sandbox:
    """The sandbox a run or score-code asked for (--code-timeout, --code-workers)."""
    if config.timeout_s <= 0:
        raise UserError("--code-timeout must be more than 0 seconds")
    return Sandbox(Limits(timeout_s=config.timeout_s), workers=config.workers)


def runner_with_progress(sandbox: Sandbox) -> Callable[[list[list[str]]], list[dict]]:
    """The function tasks are lent to run programs: the sandbox, with a progress bar."""
    # Deferred: apart from this progress bar the sandbox needs only the standard library, and its tests run it as an
    # unprivileged user under the system's bare interpreter.
    from tqdm import tqdm

    def run_programs(programs: list[list[str]]) -> list[dict]:
        with tqdm(total=len(programs), desc="running code", unit="program", dynamic_ncols=True) as bar:
            return sandbox.run(programs, progress=bar.update)

    return run_programs
