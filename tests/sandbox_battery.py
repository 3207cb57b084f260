"""Hostile completions of HumanEval/0 (`has_close_elements`) for the sandbox's tests (tests/test_sandbox.py).

Each completion follows the prompt's `def has_close_elements(numbers, threshold):` and its docstring. Most are
built so that the attack itself decides the verdict: the completion returns the right answer only if the attack
worked (a file outside was written, a secret was read, a listener was reached, a process outside was signalled),
and otherwise raises or returns None. A contained attack ends as failed, error, timed_out or crashed; an attack
that got through passes, and leaves a trace the tests look for (a changed file, a connection, a dead process,
a secret in the output). Some attacks cannot be judged from inside (a fork bomb, a daemon that outlives the
program); for those the tests look at the machine afterwards.

The completions are plain text (standard library only, no harness import): the same texts go to the sandbox in
the test's process, through `harness score-code`, and to a harness run by an unprivileged user under the system's
bare interpreter.
"""

from __future__ import annotations

import textwrap
from dataclasses import asdict, dataclass
from string import Template

TASK_ID = "HumanEval/0"
CORRECT = "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
WRONG = "    return None\n"
# The pid of the harness that runs the battery; whoever runs it replaces this word with its own pid (left as it
# is, it is an undefined name, and the attack ends in a NameError).
HARNESS_PID = "__HARNESS_PID__"
SECRET_NAMES = ("HARNESS_TEST_SECRET", "OPENAI_API_KEY")  # variables the harness holds secrets in

# The two holes this battery found (bubblewrap's root and /dev were writable tmpfs mounts without a size) are closed:
# fill_the_root_tmpfs and fill_dev_shm below fail like every other program.


@dataclass(frozen=True)
class Targets:
    """What the battery attacks: real files, listeners and processes that the test sets up outside the sandbox."""

    ssh_key: str  # a fake private key under the harness's HOME
    harness_home: str  # $HARNESS_HOME
    cache: str  # $HARNESS_HOME/cache/responses.sqlite, with a table `responses`
    outside_dir: str  # a folder any user may write; the sandbox must not change it
    outside_file: str  # in it: must keep its contents
    keep_file: str  # in it: must not be deleted
    forbidden: str  # in it: must never be created
    project_file: str  # a file of the project (pyproject.toml)
    tcp4_port: int  # a listener on 127.0.0.1
    tcp6_port: int  # a listener on ::1 (0: no IPv6 here)
    udp_port: int  # a UDP socket on 127.0.0.1
    unix_path: str  # a Unix socket listening on a path in outside_dir
    unix_abstract: str  # a Unix socket on an abstract address ("\0...")
    victim_pid: int  # a process of the sandbox's own uid outside it: must stay alive and running
    scratch_token: str  # what one program writes in its scratch and another looks for


def body(source: str) -> str:
    """Source as the function's body, run at each of the tests' calls."""
    return textwrap.indent(textwrap.dedent(source).strip("\n") + "\n", "    ")


def correct_if(source: str) -> str:
    """Source run once, when the program is loaded; it sets `found` when the attack worked, and the function
    returns the right answer only then."""
    return f"    if found:\n    {CORRECT}" + WRONG + "\n\nfound = False\n" + textwrap.dedent(source).strip("\n") + "\n"


def then_correct(source: str) -> str:
    """Source run once, when the program is loaded; the function returns the right answer if no step raised."""
    return correct_if(textwrap.dedent(source).strip("\n") + "\nfound = True")


def in_the_call_correct_if(source: str) -> str:
    """Source run at each of the tests' calls, which sets `found` when the attack worked; the right answer only
    then."""
    return body(source) + f"    if found:\n    {CORRECT}" + WRONG


def after(source: str, function: str = WRONG) -> str:
    """A function (wrong by default), then module-level code that runs when the program is loaded."""
    return function + "\n\n" + textwrap.dedent(source).strip("\n") + "\n"


FORGING = {
    # The old design ran the tests in the program's process; this completion passed there (issue 21).
    "rebind_exec": after("""
        import builtins
        builtins.exec = lambda *a, **k: None
    """),
    "rebind_assertion_error_and_import": after("""
        import builtins
        builtins.AssertionError = type("Quiet", (Exception,), {})
        builtins.__import__ = None
        builtins.print = None
        __builtins__ = {}
    """),
    "rebind_every_builtin": after("""
        import builtins
        rebind, anything = setattr, (lambda *a, **k: True)
        for name in list(vars(builtins)):
            if not name.startswith("__"):
                rebind(builtins, name, anything)
    """),
    "sys_exit_at_load": after("import sys\nsys.exit(0)"),
    "os_exit_at_load": after("import os\nos._exit(0)"),
    "sys_exit_in_the_call": body("import sys\nsys.exit(0)"),
    "os_exit_in_the_call": body("import os\nos._exit(0)"),
    "print_fake_verdicts": after("""
        import json, sys
        for stream in (sys.stdout, sys.stderr):
            print(json.dumps({"status": "passed", "passed": True, "error_type": None}), file=stream)
            print("1 passed in 0.01s", file=stream)
    """),
    "fake_verdict_on_every_descriptor": after("""
        import os
        for fd in range(3, 1024):
            try:
                os.write(fd, b'{"status": "passed", "passed": true, "error_type": null}\\n')
            except OSError:
                pass
    """),
    # Well-formed replies, written ahead on every pipe: "loaded", then True to every call.
    "forged_replies_on_the_pipes": after("""
        import os, stat
        forged = b'{"tuple":["loaded"]}\\n' + b'{"tuple":["value",true]}\\n' * 20
        for fd in range(3, 64):
            try:
                if stat.S_ISFIFO(os.fstat(fd).st_mode):
                    os.write(fd, forged)
            except OSError:
                pass
    """),
    # The runner's own encoder, patched to answer True to every call.
    "monkeypatch_the_reply_encoder": after("""
        import sys
        wire = sys.modules["wire"]
        encode = wire.encode
        wire.encode = lambda message: encode(("value", True) if message[0] == "value" else message)
    """),
    # What the tests call, redefined where the old design ran them.
    "monkeypatch_what_the_tests_call": after("""
        import builtins
        def check(candidate):
            return None
        candidate = lambda *args, **kwargs: True
        builtins.check, builtins.candidate, builtins.abs = check, candidate, (lambda x: 0)
    """),
    "eq_always_true_object": body("""
        class Anything:
            def __eq__(self, other):
                return True
            def __ne__(self, other):
                return False
            __hash__ = object.__hash__
        return Anything()
    """),
    "eq_always_true_int": body("""
        class Yes(int):
            def __eq__(self, other):
                return True
            __hash__ = int.__hash__
        return Yes(1)
    """),
    "eq_always_true_str": body("""
        class Yes(str):
            def __eq__(self, other):
                return True
            __hash__ = str.__hash__
        return Yes("True")
    """),
    "eq_always_true_float": body("""
        class Yes(float):
            def __eq__(self, other):
                return True
            __hash__ = float.__hash__
        return Yes("nan")
    """),
    # The tests' text ("... 0.95) == True") in memory: this process's (where the old design ran the tests), the
    # judge's if it can be seen. The two halves are never joined here, so the program cannot find its own source.
    "scan_memory_for_the_tests": in_the_call_correct_if("""
        import os
        head, tail = b"0.95) == ", b"True"
        found = False
        for pid in [name for name in os.listdir("/proc") if name.isdigit()]:
            try:
                if pid != str(os.getpid()) and b"judge" not in open(f"/proc/{pid}/cmdline", "rb").read():
                    continue
                regions = open(f"/proc/{pid}/maps").read().splitlines()
                with open(f"/proc/{pid}/mem", "rb", 0) as memory:
                    for region in regions:
                        span, mode = region.split()[:2]
                        start, end = (int(x, 16) for x in span.split("-"))
                        if "r" not in mode or end - start > 1 << 26:
                            continue
                        try:
                            memory.seek(start)
                            chunk = memory.read(end - start)
                        except (OSError, ValueError, OverflowError):
                            continue
                        at = chunk.find(head)
                        while at >= 0 and not found:
                            found = chunk[at + len(head):at + len(head) + 4] == tail
                            at = chunk.find(head, at + 1)
            except OSError:
                continue
    """),
    "walk_the_garbage_collector": in_the_call_correct_if("""
        import gc
        def named(thing):
            try:
                return getattr(thing, "__name__", None) or getattr(thing, "co_name", None)
            except Exception:
                return None
        found = any(named(thing) == "check" for thing in gc.get_objects())
        found = found or any(type(thing) is dict and "candidate" in thing for thing in gc.get_objects())
    """),
    "walk_the_frames": in_the_call_correct_if("""
        import sys
        found, frame = False, sys._getframe()
        while frame is not None:
            found = found or frame.f_code.co_name == "check" or "candidate" in frame.f_globals
            frame = frame.f_back
    """),
}

ESCAPING = {
    "fork_bomb": body("""
        import os
        while True:
            os.fork()
    """),
    "fork_bomb_multiprocessing": body("""
        import multiprocessing
        while True:
            multiprocessing.Process(target=print).start()
    """),
    # libc's fork returns -1 instead of raising: every process forks until the process limit refuses.
    "fork_bomb_through_ctypes": body("""
        import ctypes
        fork = ctypes.CDLL(None).fork
        while fork() >= 0:
            pass
        return None
    """),
    "thread_bomb": body("""
        import threading, time
        while True:
            threading.Thread(target=time.sleep, args=(100,)).start()
    """),
    "allocate_20_gb": then_correct("block = bytearray(20 << 30)"),
    "mmap_20_gb": then_correct("import mmap\nblock = mmap.mmap(-1, 20 << 30)"),
    "grow_memory_until_stopped": then_correct("""
        chunks = []
        for _ in range(256):  # 4 GB in 16 MB steps
            chunks.append(bytearray(16 << 20))
    """),
    "return_a_huge_value": body('return "x" * (16 << 20)'),
    "return_deep_nesting": body("""
        value = []
        for _ in range(100_000):
            value = [value]
        return value
    """),
    # 240 MB in files of 15 MB (each under the file-size limit), past the 64 MB scratch.
    "fill_the_scratch": then_correct("""
        for i in range(16):
            with open(f"fill-{i}", "wb") as handle:
                for _ in range(15):
                    handle.write(b"x" * (1 << 20))
    """),
    # 90 MB (more than the scratch's 64) in the sandbox's root and in /dev/shm: both read-only or small now.
    "fill_the_root_tmpfs": then_correct("""
        for i in range(6):
            with open(f"/fill-{i}", "wb") as handle:
                handle.write(b"x" * (15 << 20))
    """),
    "fill_dev_shm": then_correct("""
        for i in range(6):
            with open(f"/dev/shm/fill-{i}", "wb") as handle:
                handle.write(b"x" * (15 << 20))
    """),
    "one_huge_file": then_correct("""
        with open("huge", "wb") as handle:
            handle.seek((1 << 30) - 1)
            handle.write(b"x")
    """),
    # 100,000 files of 1 KB: each takes a 4 KB page, 400 MB past the scratch.
    "many_small_files": then_correct("""
        for i in range(100_000):
            with open(f"small-{i}", "wb") as handle:
                handle.write(b"x" * 1024)
    """),
    "many_empty_files": then_correct("""
        import os
        for i in range(2_000_000):
            os.close(os.open(f"empty-{i}", os.O_CREAT | os.O_WRONLY))
    """),
    "write_outside": then_correct("open($outside_file, 'w').write('changed by the sandbox')"),
    "create_outside": then_correct("open($forbidden, 'x').write('escaped')"),
    "delete_outside": then_correct("import os\nos.remove($keep_file)"),
    # Every directory the process can name (inherited descriptors, /, the outside folder), and a path from it.
    "write_through_dir_fd": correct_if("""
        import os, stat
        found, folders = False, []
        for fd in range(1024):
            try:
                if stat.S_ISDIR(os.fstat(fd).st_mode):
                    folders.append(fd)
            except OSError:
                pass
        for path in ("/", "/proc/self/root", "/proc/1/root", $outside_dir):
            try:
                folders.append(os.open(path, os.O_RDONLY | os.O_DIRECTORY))
            except OSError:
                pass
        relative = $forbidden.lstrip("/")
        for fd in folders:
            for name in (relative, "../" * 20 + relative, os.path.basename($forbidden)):
                if name == os.path.basename($forbidden) and os.path.realpath(f"/proc/self/fd/{fd}") != $outside_dir:
                    continue
                try:
                    os.close(os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
                    found = True
                except OSError:
                    pass
    """),
    "write_through_proc_links": correct_if("""
        import os
        found = False
        for pid in ["self", "1", str(os.getppid()), str(__HARNESS_PID__)] + os.listdir("/proc"):
            for link in ("root", "cwd"):
                try:
                    open(f"/proc/{pid}/{link}" + $forbidden, "x").write("escaped")
                    found = True
                except OSError:
                    pass
    """),
    "symlink_out": correct_if("""
        import os
        os.symlink($outside_file, "link")  # in its own scratch
        try:
            open("link", "w").write("changed through a symbolic link")
            found = True
        except OSError:
            found = False
    """),
    "hard_link_out": correct_if("""
        import os
        try:
            os.link($outside_file, "hard")
            open("hard", "w").write("changed through a hard link")
            found = True
        except OSError:
            found = False
    """),
    "sqlite_outside": then_correct("""
        import sqlite3
        sqlite3.connect($forbidden).execute("create table escaped (x)")
        attach = sqlite3.connect(":memory:")
        attach.execute("attach database ? as outside", ($forbidden + "-attached",))
        attach.execute("create table outside.escaped (x)")
    """),
    "mmap_outside_file": then_correct("""
        import mmap
        with open($outside_file, "r+b") as handle:
            view = mmap.mmap(handle.fileno(), 0)
            view[:7] = b"changed"
            view.flush()
    """),
    "read_kernel_memory": correct_if("""
        import mmap
        found = False
        for path in ("/dev/mem", "/dev/kmem", "/dev/port", "/proc/kcore"):
            try:
                with open(path, "rb") as handle:
                    try:
                        mmap.mmap(handle.fileno(), 4096, prot=mmap.PROT_READ)
                    except (OSError, ValueError):
                        pass
                    found = found or len(handle.read(4096)) > 0
            except OSError:
                pass
    """),
    "tcp_to_loopback": then_correct("""
        import socket
        socket.create_connection(("127.0.0.1", $tcp4_port), timeout=1).sendall(b"escaped")
    """),
    "tcp_to_loopback_ipv6": then_correct("""
        import socket
        socket.create_connection(("::1", $tcp6_port), timeout=1).sendall(b"escaped")
    """),
    "udp_to_loopback": then_correct("""
        import socket
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"escaped", ("127.0.0.1", $udp_port))
    """),
    "unix_socket_by_path": then_correct("""
        import socket
        unix = socket.socket(socket.AF_UNIX)
        unix.connect($unix_path)
        unix.sendall(b"escaped")
    """),
    "unix_socket_abstract": then_correct("""
        import socket
        unix = socket.socket(socket.AF_UNIX)
        unix.connect($unix_abstract)
        unix.sendall(b"escaped")
    """),
    "host_daemon_sockets": correct_if("""
        import socket
        found = False
        for path in ("/run/docker.sock", "/var/run/docker.sock", "/run/dbus/system_bus_socket",
                     "/run/systemd/private", "/run/containerd/containerd.sock", "\\0/tmp/.X11-unix/X0"):
            try:
                socket.socket(socket.AF_UNIX).connect(path)
                found = True
            except OSError:
                pass
    """),
    "internet": then_correct("""
        import socket
        socket.create_connection(("1.1.1.1", 53), timeout=1)
    """),
    # Creating any socket but a Unix one is refused (seccomp), whatever it would reach.
    "every_other_socket_family": correct_if("""
        import socket
        found = False
        for family, kind in (("AF_NETLINK", "SOCK_RAW"), ("AF_PACKET", "SOCK_RAW"), ("AF_INET", "SOCK_RAW"),
                             ("AF_INET6", "SOCK_DGRAM"), ("AF_VSOCK", "SOCK_STREAM"), ("AF_ALG", "SOCK_SEQPACKET"),
                             ("AF_TIPC", "SOCK_RDM"), ("AF_CAN", "SOCK_RAW"), ("AF_BLUETOOTH", "SOCK_STREAM"),
                             ("AF_RDS", "SOCK_SEQPACKET"), ("AF_QIPCRTR", "SOCK_DGRAM")):
            if hasattr(socket, family):
                try:
                    socket.socket(getattr(socket, family), getattr(socket, kind)).close()
                    found = True
                except OSError:
                    pass
        try:
            socket.socketpair(socket.AF_INET)
            found = True
        except OSError:
            pass
    """),
    "new_namespaces_mounts_chroot": correct_if("""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        found = (libc.unshare(0x10000000) == 0 or libc.unshare(0x00020000) == 0  # CLONE_NEWUSER, CLONE_NEWNS
                 or libc.mount(b"none", b".", b"tmpfs", 0, None) == 0 or libc.chroot(b".") == 0)
    """),
    "shell_out": then_correct("""
        import subprocess
        subprocess.run(["/bin/sh", "-c", "echo changed > " + $outside_file], check=True)
    """),
}

SECRETS = {
    # A name of a variable the harness holds a secret in, anywhere: its own environment, any /proc/*/environ.
    "read_the_environment": correct_if("""
        import os
        names = set($secret_names)
        seen = [f"{k}={v}" for k, v in os.environ.items() if k in names]
        for pid in ["self", "1", str(os.getppid()), str(__HARNESS_PID__)] + os.listdir("/proc"):
            try:
                entries = open(f"/proc/{pid}/environ", "rb").read().split(b"\\0")
            except OSError:
                continue
            seen += [e.decode() for e in entries if e.split(b"=")[0].decode() in names]
        print(seen)
        found = bool(seen)
    """),
    "read_ssh_keys": correct_if("""
        import os
        seen = []
        for path in (os.path.expanduser("~/.ssh/id_rsa"), $ssh_key):
            try:
                seen.append(open(path).read())
            except OSError:
                pass
        print(seen)
        found = bool(seen)
    """),
    "read_harness_home": then_correct("""
        import os
        print(os.listdir($harness_home))
        print(open($cache, "rb").read())
    """),
    "read_the_response_cache": then_correct("""
        import sqlite3
        print(sqlite3.connect("file:" + $cache + "?mode=ro", uri=True).execute("select * from responses").fetchall())
    """),
    "read_project_and_host_files": correct_if("""
        found = False
        for path in ($project_file, "/etc/passwd", "/etc/hostname", "/etc/shadow"):
            try:
                found = found or len(open(path, "rb").read()) > 0
            except OSError:
                pass
    """),
    # A pair that run at the same time: the writer leaves a token in its scratch and its output, and waits; the
    # reader looks for it wherever other programs' scratch or output could be seen.
    "scratch_writer": after("""
        import time
        open("secret.txt", "w").write($scratch_token)
        print($scratch_token, flush=True)
        time.sleep(2.0)
    """),
    "scratch_reader": correct_if("""
        import glob, time
        found, deadline = False, time.monotonic() + 2.5
        while not found and time.monotonic() < deadline:
            for path in (glob.glob("/tmp/*/secret.txt") + glob.glob("/tmp/*/*/stdout") + glob.glob("/dev/shm/*")
                         + glob.glob("/proc/*/root/tmp/secret.txt") + glob.glob("/proc/*/cwd/secret.txt")):
                try:
                    found = found or $scratch_token in open(path, errors="replace").read()
                except OSError:
                    pass
            time.sleep(0.05)
    """),
}

HARNESS = {
    "kill_the_harness": then_correct("import os, signal\nos.kill(__HARNESS_PID__, signal.SIGKILL)"),
    "kill_the_harness_group": then_correct("import os, signal\nos.killpg(os.getpgid(__HARNESS_PID__), signal.SIGKILL)"),
    "pidfd_kill_the_harness": then_correct("""
        import os, signal
        signal.pidfd_send_signal(os.pidfd_open(__HARNESS_PID__), signal.SIGKILL)
    """),
    "kill_the_victim": then_correct("import os, signal\nos.kill($victim_pid, signal.SIGKILL)"),
    "stop_the_victim": then_correct("import os, signal\nos.kill($victim_pid, signal.SIGSTOP)"),
    "pidfd_kill_the_victim": then_correct("""
        import os, signal
        signal.pidfd_send_signal(os.pidfd_open($victim_pid), signal.SIGKILL)
    """),
    # Inside the walls the parent is the namespace's init, which ignores signals from inside: nothing to gain, and
    # the harness must not notice.
    "kill_the_parent": body("""
        import os, signal
        os.kill(os.getppid(), signal.SIGKILL)
        os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)
        return None
    """),
    "kill_everything_in_sight": body("""
        import os, signal
        os.kill(-1, signal.SIGKILL)
        return None
    """),
    # PTRACE_SEIZE (0x4206) attaches without stopping the process.
    "ptrace_the_harness_and_the_victim": correct_if("""
        import ctypes
        ptrace = ctypes.CDLL(None, use_errno=True).ptrace
        ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        found = any(ptrace(0x4206, pid, None, None) == 0 for pid in (__HARNESS_PID__, $victim_pid))
    """),
    "proc_mem_of_the_harness_and_the_victim": correct_if("""
        found = False
        for pid in (__HARNESS_PID__, $victim_pid):
            try:
                open(f"/proc/{pid}/mem", "r+b").close()
                found = True
            except OSError:
                pass
    """),
}

OUTLIVING = {
    "double_fork_daemon": body("""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                while True:
                    time.sleep(0.1)
            os._exit(0)
        return None
    """),
    "setsid_sleeper": body("""
        import os, time
        if os.fork() == 0:
            os.setsid()
            time.sleep(1000)
        return None
    """),
    "thread_that_ignores_signals": body("""
        import signal, threading
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU, signal.SIGPIPE):
            signal.signal(number, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        def spin():
            while True:
                pass
        threading.Thread(target=spin).start()
        return None
    """),
    "hang_at_exit": after("""
        import atexit, time
        atexit.register(time.sleep, 1000)
    """),
    "busy_loop_in_the_call": body("while True:\n    pass"),
    "sleep_in_the_call": body("import time\ntime.sleep(1000)"),
    "busy_loop_at_load": after("while True:\n    pass"),
    "correct_after_the_deadline": then_correct("import time\ntime.sleep(4)"),
}

FAMILIES = {"forging a pass": FORGING, "escaping": ESCAPING, "reading secrets": SECRETS,
            "attacking the harness": HARNESS, "outliving the program": OUTLIVING}
TEMPLATES = {name: source for family in FAMILIES.values() for name, source in family.items()}
# The pair that must overlap goes first, so that both start at once.
NAMES = ["scratch_writer", "scratch_reader", *(name for name in TEMPLATES if not name.startswith("scratch_"))]


def hostile_completions(targets: Targets) -> dict[str, str]:
    """Every hostile completion by name, with the targets filled in ($name: the target's value as a literal)."""
    values = {name: repr(value) for name, value in asdict(targets).items()}
    values["secret_names"] = repr(SECRET_NAMES)
    return {name: Template(TEMPLATES[name]).substitute(values) for name in NAMES}


def family_of(name: str) -> str:
    return next(family for family, members in FAMILIES.items() if name in members)
