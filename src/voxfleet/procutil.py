"""Process helpers shared by the layers that start processes."""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """For ``preexec_fn``: the child gets SIGTERM when its parent dies, so a control plane
    killed with -9 leaves no LLM server or template behind (Linux only; no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def can_renice_back(nice: int) -> bool:
    """Whether this process could raise its threads back from `nice` to 0 (root, or an
    RLIMIT_NICE that allows it): only then may a warm bot lower its priority while it waits."""
    import os
    import resource

    if os.geteuid() == 0:
        return True
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    except (AttributeError, OSError):
        return False
    return soft == resource.RLIM_INFINITY or soft >= 20 or nice <= 0


def set_threads_nice(nice: int) -> int:
    """Set the nice value of every thread of this process (Linux keeps one per thread, and a new
    thread inherits its creator's); the number of threads changed."""
    import os

    changed = 0
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        tids = [str(os.getpid())]
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)
            changed += 1
        except OSError:  # a thread that ended meanwhile, or not permitted
            pass
    return changed


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, exited but not yet reaped, counts as gone)."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def cmdline(pid: int) -> list[str]:
    """The command line of process `pid` ([] if it is gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except OSError:
        return []


def proc_state(pid: int) -> str | None:
    """The scheduler state letter of process `pid` (R, S, D, T, t, Z, ...); None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
