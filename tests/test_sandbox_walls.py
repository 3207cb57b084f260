"""The sandbox's plain behaviour: its deadline, its scratch, its environment, its refusal without the kernel's
walls, and memory a program cannot hold outside its limits (the hostile battery is tests/test_sandbox.py)."""

import os
import secrets
import time
from pathlib import Path

import pytest

from harness.engine.programs import Program
from harness.errors import UserError
from harness.sandbox.judges import GRACE_S as JUDGE_GRACE_S
from harness.sandbox.process import Limits, Sandbox
from harness.sandbox.walls import ENVIRONMENT
from tasks.humaneval import program, read_problems
from tests.sandbox_battery import CORRECT, TASK_ID, WRONG

# ---------------------------------------------------------------------------------------------------------------
# Plain behaviour: the deadline, the scratch, the environment


def test_the_timeout_is_the_one_asked_for():
    """The judge keeps the deadline itself: a program that never ends is stopped after the timeout asked for, well
    before the harness's last resort (the timeout plus JUDGE_GRACE_S)."""
    sandbox = Sandbox(Limits(timeout_s=1.0), workers=1)
    try:
        started = time.perf_counter()
        outcome = sandbox.run([Program("import time\nwhile True:\n    time.sleep(0.05)\n")])[0]
        elapsed = time.perf_counter() - started
    finally:
        sandbox.close()
    assert outcome["status"] == "timed_out" and outcome["passed"] is False, outcome
    assert 1.0 <= outcome["duration_s"] and elapsed < 1.0 + JUDGE_GRACE_S / 2


def test_the_scratch_starts_empty_and_nothing_is_left():
    """What one program writes (its scratch, /, /dev/shm) is not seen by the next, nor left on the host."""
    mark = f"harness-sandbox-mark-{secrets.token_hex(8)}"
    places = "('.', '/tmp', '/', '/dev/shm', '/runner')"
    writer = ("import os\nassert os.listdir('.') == []\n"
              f"for place in {places}:\n"
              "    try:\n"
              f"        open(os.path.join(place, {mark!r}), 'w').write('x')\n"
              "    except OSError:\n"
              "        pass\n")
    reader = (f"import os\nassert os.listdir('.') == []\nfor place in {places}:\n"
              f"    assert not os.path.exists(os.path.join(place, {mark!r})), place\n")
    sandbox = Sandbox(Limits(timeout_s=5.0), workers=2)
    private = sandbox._private
    try:
        first = sandbox.run([Program(writer)])[0]
        second = sandbox.run([Program(reader)])[0]
    finally:
        sandbox.close()
    assert first["passed"] and second["passed"], (first, second)
    assert not private.exists()
    host = [Path("/tmp") / mark, *Path("/tmp").glob(f"*/{mark}"), Path("/dev/shm") / mark, Path(os.getcwd()) / mark]
    assert not any(path.exists() for path in host)


def test_the_environment_holds_none_of_the_harnesss(monkeypatch):
    secret = f"hunter-{secrets.token_hex(8)}"
    monkeypatch.setenv("HARNESS_TEST_SECRET", secret)
    check = (f"import os, sys\nassert set(os.environ) <= {set(ENVIRONMENT) | {'PWD'}!r}, sorted(os.environ)\n"
             f"assert {secret!r} not in repr(os.environ)\nassert sys.stdin.read() == ''\n")
    sandbox = Sandbox(Limits(timeout_s=5.0), workers=1)
    try:
        outcome = sandbox.run([Program(check)])[0]
    finally:
        sandbox.close()
    assert outcome["passed"], outcome


def test_without_bubblewrap_the_sandbox_refuses_unless_weak_isolation_is_asked_for(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no bwrap on the PATH
    with pytest.raises(UserError, match="bubblewrap"):
        Sandbox(Limits(timeout_s=5.0))
    sandbox = Sandbox(Limits(timeout_s=5.0), workers=2, weak_isolation=True)
    problem = read_problems()[TASK_ID]
    try:
        right, wrong = sandbox.run([program(problem, CORRECT), program(problem, WRONG)])
    finally:
        sandbox.close()
    assert sandbox.isolation.startswith("weak:") and "bubblewrap" in sandbox.isolation
    assert right["passed"] and right["isolation"].startswith("weak:"), right
    assert wrong["status"] == "failed" and wrong["isolation"].startswith("weak:"), wrong


# Memory a program could hold outside its address-space limit (RLIMIT_AS): 192 MB each, with a limit of 128 MB. A
# program without tests passes when loading it raises nothing, so each passes if the memory was there to take.
# Each way was open once (the second item says how) and is closed now: the root and /dev are read-only, /dev/shm is
# a 16 MiB tmpfs, shmget and memfd_create are refused by the seccomp filter.
MEMORY_PAST_THE_LIMIT = {
    "files in /": ("for i in range(13):\n    open(f'/fill-{i}', 'wb').write(b'x' * (15 << 20))\n",
                   "bubblewrap's root is a tmpfs without a size (up to half the RAM), writable by the program"),
    "files in /dev/shm": ("for i in range(13):\n    open(f'/dev/shm/fill-{i}', 'wb').write(b'x' * (15 << 20))\n",
                          "bubblewrap's /dev is a tmpfs without a size (up to half the RAM), writable by the program"),
    "SysV shared memory": (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "libc.shmat.restype, libc.shmat.argtypes = ctypes.c_void_p, [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]\n"
        "libc.shmdt.argtypes = [ctypes.c_void_p]\n"
        "for _ in range(12):\n"
        "    segment = libc.shmget(0, 16 << 20, 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600\n"
        "    assert segment >= 0, ctypes.get_errno()\n"
        "    address = libc.shmat(segment, None, 0)\n"
        "    ctypes.memset(address, 1, 16 << 20)\n"
        "    libc.shmdt(address)  # detached: out of the address space, still in the IPC namespace\n",
        "segments of the program's IPC namespace outlive their mapping (shmget is allowed, the namespace's shmall "
        "is the kernel's default)"),
    "memfds": ("import os\nkept = []\nfor _ in range(12):\n    kept.append(os.memfd_create('x'))\n"
               "    os.write(kept[-1], b'x' * (16 << 20))\n",
               "memfd files are memory outside RLIMIT_AS, up to RLIMIT_NOFILE x RLIMIT_FSIZE (64 x 16 MB)"),
}


@pytest.mark.parametrize("code", [pytest.param(code, id=name) for name, (code, how) in MEMORY_PAST_THE_LIMIT.items()])
def test_memory_past_the_address_space_limit_is_refused(code):
    sandbox = Sandbox(Limits(timeout_s=5.0, memory_mb=128), workers=1, audit_hook=False)
    try:
        outcome = sandbox.run([Program(code)])[0]
    finally:
        sandbox.close()
    assert outcome["status"] != "passed", outcome




def test_a_hostile_value_costs_the_judge_no_more_than_the_program_may_spend():
    """HumanEval/33's tests call tuple(candidate(...)): a returned range(10**9) crosses as a lazy range, and the
    judge expanding it runs into the program's own memory limit (or its deadline), not the machine's."""
    sandbox = Sandbox(Limits(timeout_s=3.0, memory_mb=256), workers=1)
    try:
        started = time.perf_counter()
        outcome = sandbox.run([program(read_problems()["HumanEval/33"], "    return range(10 ** 9)\n")])[0]
    finally:
        sandbox.close()
    assert outcome["status"] in ("error", "timed_out") and outcome["error_type"] in ("MemoryError", "timeout"), outcome
    assert time.perf_counter() - started < 3.0 + 10  # well before the harness's backstop on a hung judge
