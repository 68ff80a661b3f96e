"""One daemon per state folder: an flock on `<state>/daemon.lock` holding the pid.

The kernel drops the lock when the holder dies (even by kill -9), so a stale
pid file can never block a restart. Readers (`status`) probe with a shared
lock; since that probe briefly holds the lock, acquiring retries for a moment.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from forgesyte.storage.atomic import pwrite_all
from forgesyte.storage.jobs import utc_now

LOCK_NAME = "daemon.lock"


class StateLock:
    def __init__(self, state_dir: Path | str):
        self.path = Path(state_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, wait: float = 1.0, owner: str = "daemon") -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.02)
        self._fd = fd
        if owner == "daemon":
            info = json.dumps({"pid": os.getpid(), "since": utc_now()}).encode()
            os.ftruncate(fd, 0)
            pwrite_all(fd, info)  # every byte or an error: `status` never reads half a pid
            os.fsync(fd)
        return True

    def update(self, **fields: Any) -> None:
        """Add fields to what the lock file says (the daemon's ongoing conditions, which
        `doctor` reports from the daemon's point of view)."""
        if self._fd is None:
            return
        try:
            data = json.loads(os.pread(self._fd, 1 << 16, 0) or b"{}")
        except ValueError:
            data = {}
        data.update(fields)
        info = json.dumps(data).encode()
        pwrite_all(self._fd, info)
        os.ftruncate(self._fd, len(info))

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if self._owner_is_me():
                os.ftruncate(self._fd, 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _owner_is_me(self) -> bool:
        try:
            data = json.loads(os.pread(self._fd, 1 << 16, 0) or b"{}")
        except ValueError:
            return False
        return data.get("pid") == os.getpid()

    def __enter__(self) -> "StateLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def daemon_info(state_dir: Path | str) -> dict[str, Any]:
    """{"running": bool, "pid": int|None, "since": str|None, "conditions": [...]} without
    disturbing the daemon (conditions: what it lives with now, see forgesyte/conditions.py)."""
    path = Path(state_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, PermissionError):
        return {"running": False, "pid": None, "since": None, "conditions": []}
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            running = True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            running = False
        try:
            data = json.loads(os.pread(fd, 1 << 16, 0) or b"{}")
        except ValueError:
            data = {}
    finally:
        os.close(fd)
    if not running:
        return {"running": False, "pid": None, "since": None, "conditions": []}
    return {"running": True, "pid": data.get("pid"), "since": data.get("since"),
            "conditions": data.get("conditions") or []}
