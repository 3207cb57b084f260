"""The kernel's walls around one program: bubblewrap, namespaces, a read-only system, a private scratch tmpfs.

Each program runs as `bwrap [walls] python -E -s -S /runner/candidate.py ...` with:
  - new user, mount, PID, network, IPC, UTS and cgroup namespaces (`--unshare-all`), no further user namespaces
    (`--disable-userns`), a session of its own (`--new-session`: no terminal to inject into), and death with its
    parent (`--die-with-parent`); when the PID namespace's first process dies, the kernel kills every process
    left in it, so nothing a program starts (double forks, setsid, daemons) outlives it;
  - a file system made of read-only binds of /usr (and the /bin, /lib... links into it) and of the interpreter's
    own installation at /python, copies of the two runner files at /runner, a fresh /proc and read-only /dev
    with a 16 MiB /dev/shm, and a private tmpfs of `scratch_mb` at /tmp as its working directory, HOME and
    TMPDIR, gone when the program ends; the rest is read-only.
    Nothing else of the host exists in its view: not HOME, not $HARNESS_HOME and its response cache, not the
    project, not the caller's working directory, not other programs' scratch;
  - an environment built from nothing (`--clearenv`, then PATH, LANG, HOME, TMPDIR);
  - the seccomp filter of harness/sandbox/seccomp_filter.py;
  - when the harness runs as root, an unprivileged uid outside as well (SANDBOX_UID): the kernel does not apply
    the process limit to root, even inside a user namespace, so a fork bomb would otherwise be bounded by time only.
The resource limits (CPU, memory, file size, open files, processes) are set by the runner inside, before any
untrusted code. bubblewrap is Debian's `bubblewrap` package (the sandbox of Flatpak); it needs unprivileged user
namespaces, which most distributions allow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

RUNNER_DIR = Path(__file__).parent / "runner"
RUNNER_FILES = ("candidate.py", "wire.py")
INSIDE_RUNNER = "/runner"
INSIDE_PYTHON = "/python"
SHM_MB = 16  # the program's /dev/shm
SANDBOX_UID = 1_500_000_000  # no account has it; used only when the harness is root
SYSTEM_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")  # into /usr on merged-/usr systems
ENVIRONMENT = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": "/tmp", "TMPDIR": "/tmp",
               "OMP_NUM_THREADS": "1"}
DESCRIPTION = ("bubblewrap: user, mount, pid, network, ipc, uts and cgroup namespaces; seccomp; rlimits; "
               "read-only /usr and Python; private /tmp")


@dataclass(frozen=True)
class Walls:
    bwrap: str
    python_home: str  # the host folder bound read-only at /python (empty: the interpreter lives under /usr)
    python: str  # the interpreter's path inside the sandbox
    uid: int | None  # the unprivileged uid bubblewrap runs as (None: the harness's own, which is not root)

    def command(self, runner_args: list[str], file_fds: dict[str, int], seccomp_fd: int, scratch_mb: int
                ) -> list[str]:
        """The command line that runs the candidate runner inside the walls; `file_fds` holds a descriptor with
        each runner file's text (copied in, so that the sandbox needs no view of the harness's folder)."""
        argv = self.walls(seccomp_fd, scratch_mb)
        for name, fd in file_fds.items():  # before the root is made read-only
            argv[-4:-4] = ["--ro-bind-data", str(fd), f"{INSIDE_RUNNER}/{name}"]
        return [*argv, self.python, "-E", "-s", "-S", f"{INSIDE_RUNNER}/candidate.py", *runner_args]

    def walls(self, seccomp_fd: int, scratch_mb: int) -> list[str]:
        """bubblewrap's arguments, up to the command it runs (the last four: --remount-ro / --seccomp FD)."""
        argv = [self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
                "--new-session", "--ro-bind", "/usr", "/usr"]
        for name in SYSTEM_LINKS:
            path = Path("/") / name
            if path.is_symlink():
                argv += ["--symlink", os.readlink(path), str(path)]
            elif path.is_dir():
                argv += ["--ro-bind", str(path), str(path)]
        if self.python_home:
            argv += ["--ro-bind", self.python_home, INSIDE_PYTHON]
        # bubblewrap's own root and /dev are tmpfs mounts without a size: files there would be memory outside
        # every limit, so both are made read-only once built, and /dev/shm (which multiprocessing's locks need)
        # gets a small tmpfs of its own. `--remount-ro` is not recursive: /tmp and /dev/shm stay writable.
        argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(SHM_MB << 20), "--tmpfs", "/dev/shm",
                 "--size", str(scratch_mb << 20), "--tmpfs", "/tmp", "--remount-ro", "/dev"]
        argv += ["--chdir", "/tmp", "--clearenv"]
        for name, value in ENVIRONMENT.items():
            argv += ["--setenv", name, value]
        return argv + ["--remount-ro", "/", "--seccomp", str(seccomp_fd)]

    def popen_user(self) -> dict:
        """Popen's arguments that start bubblewrap as the sandbox's uid."""
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.uid, "extra_groups": []}


def interpreters() -> list[tuple[str, str]]:
    """(installation to bind, interpreter inside) for this Python, then for a system Python of the same version:
    when the harness is root, its own Python may sit where the sandbox's uid cannot read (pyenv under /root)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    base = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    home = Path(os.path.realpath(sys.base_prefix))
    found = []
    if base.is_relative_to("/usr"):
        found.append(("", str(base)))
    elif base.is_relative_to(home):
        found.append((str(home), f"{INSIDE_PYTHON}/{base.relative_to(home)}"))
    for system in (f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        if os.access(system, os.X_OK) and ("", system) not in found:
            found.append(("", system))
    return found


def find_walls() -> Walls | str:
    """The walls this machine can build, each checked by running an empty program in them, or a sentence saying
    what is missing."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap is not installed (Debian: apt-get install bubblewrap)"
    uid = SANDBOX_UID if os.geteuid() == 0 else None
    reasons = []
    for python_home, python in interpreters():
        walls = Walls(bwrap, python_home, python, uid)
        probe = subprocess.run([*walls.walls(0, 1)[:-2], python, "-E", "-s", "-S", "-c", "import json, resource"],
                               capture_output=True, text=True, timeout=60, env=ENVIRONMENT, stdin=subprocess.DEVNULL,
                               **walls.popen_user())
        if probe.returncode == 0:
            return walls
        reasons.append((probe.stderr.strip().splitlines() or [f"exit code {probe.returncode}"])[-1])
    return f"bubblewrap cannot build the sandbox here: {'; '.join(reasons) or 'no Python to run'}"
