"""The settle gate: a file is ready only once it has stopped changing.

Watchdog events (created, modified, closed-after-write, moved-in) only tell
the gate *which* files to look at; readiness is decided by stat alone, so a
lost or reordered event can delay a file but never make it early.

A candidate is ready when its signature (size, mtime, ctime, inode) has not
changed for `quiet` seconds of our own monotonic clock. Shortcut: when the
file's own ctime is already older than `quiet` (a file that was there before
we started), it is ready at once. ctime cannot be set by a writer, so a copy
tool that preserves mtimes cannot fool it; the shortcut is off in polling
mode, where the file server's clock may disagree with ours.

A file with an open handle (seen through inotify open/close events) is not
ready however long it has been quiet, so a writer that pauses mid-copy for
longer than the window still never yields a partial job. Because a close
event can be lost (queue overflow) and a reader (a media player) also holds
handles, an open file that has not changed for `open_timeout` seconds is
taken anyway, with a warning.

The caller confirms once more after hashing (size and mtime unchanged), and
the daemon checks again when a worker picks the job up.
"""

from __future__ import annotations

import logging
import os
import stat as statmod
import time
from dataclasses import dataclass, field
from typing import Callable

from forgesyte.storage.paths import Root, UnsafeKey

log = logging.getLogger("forgesyte.settle")


def signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


@dataclass
class Candidate:
    key: str
    sig: tuple | None = None
    since: float = 0.0
    next_check: float = 0.0


@dataclass
class Ready:
    key: str
    stat: os.stat_result


@dataclass
class SettleGate:
    inbox: Root
    quiet: float
    trust_ctime: bool = True
    is_open: Callable[[str], bool] = lambda key: False
    open_timeout: float = 300.0
    clock: Callable[[], float] = time.monotonic
    wallclock: Callable[[], float] = time.time
    candidates: dict[str, Candidate] = field(default_factory=dict)

    @property
    def interval(self) -> float:
        return min(0.25, max(0.02, self.quiet / 4))

    def observe(self, key: str) -> None:
        """A hint that `key` may have changed: look at it on the next poll."""
        cand = self.candidates.get(key)
        if cand is None:
            self.candidates[key] = Candidate(key, next_check=self.clock())
        else:
            cand.next_check = min(cand.next_check, self.clock())

    def forget(self, key: str) -> None:
        self.candidates.pop(key, None)

    def __len__(self) -> int:
        return len(self.candidates)

    def poll(self) -> list[Ready]:
        now = self.clock()
        ready: list[Ready] = []
        for key in [k for k, c in self.candidates.items() if c.next_check <= now]:
            cand = self.candidates[key]
            try:
                st = os.stat(self.inbox.path_for(key))
            except (FileNotFoundError, NotADirectoryError, UnsafeKey):
                del self.candidates[key]  # gone, or a symlink out of the inbox
                continue
            except OSError:
                cand.next_check = now + self.interval
                continue
            if not statmod.S_ISREG(st.st_mode):
                del self.candidates[key]
                continue
            sig = signature(st)
            if sig != cand.sig:
                cand.sig, cand.since = sig, now
            quiet_for = now - cand.since
            if st.st_size == 0:
                # Not a job until it has content; a later write event brings it back.
                if quiet_for >= self.quiet:
                    del self.candidates[key]
                else:
                    cand.next_check = now + self.interval
                continue
            old_already = self.trust_ctime and (
                self.wallclock() - max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 >= self.quiet
            )
            if self.is_open(key) and quiet_for < self.open_timeout:
                cand.next_check = now + self.interval
                continue
            if quiet_for >= self.quiet or old_already:
                if self.is_open(key):
                    log.warning("%s is still open but unchanged for %.0f s; taking it", key, quiet_for)
                del self.candidates[key]
                ready.append(Ready(key, st))
            else:
                # Look again soon, and exactly when the window would expire.
                cand.next_check = min(now + self.interval, cand.since + self.quiet)
        return ready
