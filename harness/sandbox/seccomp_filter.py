"""The seccomp filter every sandboxed program runs under: system calls the namespaces do not cover fail with EPERM.

Namespaces give a program its own view of processes, mounts, network and IPC; they do not stop it from asking the
kernel for things no test needs and that have been the way out of containers before: tracing other processes,
kernel keyrings, mounting, loading modules or BPF programs, perf events, userfaultfd and io_uring (large kernel
attack surfaces), new namespaces. Sockets other than Unix ones are refused too, on top of the empty network
namespace. The list follows Docker's and Flatpak's default profiles (which bubblewrap's documentation points to);
everything else is allowed, since a denylist keeps the interpreter working without a catalogue of what it calls.

The filter is compiled by libseccomp (through the pyseccomp bindings) to a BPF program that bubblewrap installs
(`--seccomp FD`) after setting up the namespaces and before running the program.
"""

from __future__ import annotations

import errno
import socket
import tempfile

REFUSED_SYSCALLS = (
    # other processes' memory and state
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # kernel keyrings (secrets of the user's session)
    "keyctl", "add_key", "request_key",
    # the file-system tree and namespaces
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig",
    "fspick", "mount_setattr", "unshare", "setns", "open_by_handle_at", "name_to_handle_at",
    # the kernel itself
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "bpf", "perf_event_open",
    "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "reboot", "swapon", "swapoff",
    "syslog", "acct", "quotactl", "lookup_dcookie", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "iopl", "ioperm", "personality", "uselib", "vhangup", "fanotify_init",
    # memory that no limit counts: SysV segments live on in the IPC namespace after shmdt, memfds outside RLIMIT_AS
    "shmget", "memfd_create", "memfd_secret",
)


class SeccompUnavailable(Exception):
    """libseccomp (or its Python bindings) is missing."""


def compile_filter() -> bytes:
    """The BPF program, as bubblewrap's --seccomp reads it."""
    try:
        import pyseccomp  # deferred: loads libseccomp.so.2 through ctypes, needed only where code is executed
    except (ImportError, OSError) as error:
        raise SeccompUnavailable(f"libseccomp is not available ({error}); on Debian: apt-get install "
                                 "libseccomp2, and pip install pyseccomp") from None
    refuse = pyseccomp.ERRNO(errno.EPERM)
    rules = pyseccomp.SyscallFilter(defaction=pyseccomp.ALLOW)
    for name in REFUSED_SYSCALLS:
        try:
            rules.add_rule(refuse, name)
        except (OSError, ValueError):
            continue  # a call this kernel's architecture does not have
    rules.add_rule(refuse, "socket", pyseccomp.Arg(0, pyseccomp.NE, socket.AF_UNIX))
    rules.add_rule(refuse, "socketpair", pyseccomp.Arg(0, pyseccomp.NE, socket.AF_UNIX))
    with tempfile.TemporaryFile() as handle:
        rules.export_bpf(handle)
        handle.seek(0)
        return handle.read()

