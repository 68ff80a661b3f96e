"""No process outlives its job: child subreapers and descendant killing (Linux).

A plugin may start processes (ffmpeg, a model server, a double-forked
daemon that calls setsid to escape its process group). A process group kill
misses the escaped ones, and an orphan normally goes to init, out of reach.
PR_SET_CHILD_SUBREAPER makes orphans of our descendants become our children
instead, so one process can always find and kill everything below it by
reading /proc/self/task/*/children, whatever sessions and groups they made.

Each worker slot is two processes: a small *host* (subreaper, runs no plugin
code, so its signal handlers always run) and the *worker* it forks, which is
a subreaper too. After every job the worker kills everything below it. When
the worker dies (crash, timeout kill, stop) the host kills what is left and
exits. When the daemon dies, even by kill -9, the kernel sends the host
SIGTERM (PR_SET_PDEATHSIG) and it does the same. Under systemd the unit's
cgroup is a second net (KillMode=control-group) at stop.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_libc = None


def _prctl(option: int, value: int) -> bool:
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        return _libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Orphaned descendants are re-parented to this process, not to init."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def signal_on_parent_death(sig: int) -> bool:
    """The kernel sends `sig` to this process when its parent dies (even by kill -9)."""
    return _prctl(PR_SET_PDEATHSIG, int(sig))


def children(pid: int | None = None) -> list[int]:
    """Direct children of `pid` (default: this process), from every thread's list."""
    pid = os.getpid() if pid is None else pid
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                found.extend(int(x) for x in fh.read().split())
        except (OSError, ValueError):
            continue
    return found


def kill_descendants(exclude: frozenset[int] = frozenset(), rounds: int = 64) -> int:
    """SIGKILL every descendant of this (subreaper) process and reap it; returns how many.

    Killing a child re-parents its own children to us, so repeat until none is
    left. `exclude`: direct children to leave alone.
    """
    killed = 0
    for _ in range(rounds):
        victims = [pid for pid in children() if pid not in exclude]
        if not victims:
            break
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        for pid in victims:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            except OSError as exc:  # pragma: no cover - EINTR is retried by Python
                if exc.errno != errno.EINTR:
                    raise
    return killed


def reap_zombies() -> None:
    """Collect exited children without blocking (orphans re-parented to us)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
