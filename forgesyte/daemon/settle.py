"""The settle gate: a file is ready only once it has stopped changing.

Watchdog events (created, modified, closed-after-write, moved-in) and scans
only tell the gate *which* files to look at; readiness is decided by stat
alone, so a lost or reordered event can delay a file but never make it early.

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

Candidates wait in a heap ordered by when they are next due, so a poll costs
what is due, not what is watched: an inbox with 100,000 files being settled
costs a turn of the daemon's loop no more than one with ten. `poll(limit)`
hands out at most `limit` ready files, so the caller decides how much work
it takes on; the rest stay due and come out at the next poll.

The caller confirms once more after hashing (size and mtime unchanged), and
the daemon checks again when a worker picks the job up.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import stat as statmod
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from forgesyte.storage.paths import Root, UnsafeKey

log = logging.getLogger("forgesyte.settle")


def signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


@dataclass(slots=True)
class Candidate:
    key: str
    sig: tuple | None = None
    since: float = 0.0  # monotonic time its signature last changed
    next_check: float = 0.0


@dataclass(slots=True)
class Ready:
    key: str
    stat: os.stat_result
    path: str  # resolved once, inside the inbox; the hash and the re-check use this one


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
    # (due time, tie-breaker, key); an entry whose time is not its candidate's
    # next_check is stale (the candidate was rescheduled or forgotten) and skipped.
    _due: list[tuple[float, int, str]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def interval(self) -> float:
        return min(0.25, max(0.02, self.quiet / 4))

    def _schedule(self, cand: Candidate, when: float) -> None:
        cand.next_check = when
        heapq.heappush(self._due, (when, next(self._order), cand.key))

    def observe(self, key: str) -> None:
        """A hint that `key` may have changed: look at it on the next poll."""
        now = self.clock()
        cand = self.candidates.get(key)
        if cand is None:
            cand = self.candidates[key] = Candidate(key)
            self._schedule(cand, now)
        elif cand.next_check > now:
            self._schedule(cand, now)

    def forget(self, key: str) -> None:
        self.candidates.pop(key, None)

    def clear(self) -> None:
        self.candidates.clear()
        self._due.clear()

    def __len__(self) -> int:
        return len(self.candidates)

    def next_due(self) -> float | None:
        """Monotonic time of the earliest check (possibly of a stale entry), None if none."""
        return self._due[0][0] if self._due else None

    def poll(self, limit: int | None = None, until: float | None = None) -> list[Ready]:
        """Look at the candidates that are due: all of them, or until `limit` have turned
        ready or the clock passes `until` (the rest stay due for the next poll)."""
        now = self.clock()
        ready: list[Ready] = []
        due = self._due
        looked = 0
        real_root: str | None = None
        while due and due[0][0] <= now and (limit is None or len(ready) < limit):
            if until is not None and looked and (looked % 8 == 0) and self.clock() >= until:
                break
            looked += 1
            when, _, key = heapq.heappop(due)
            cand = self.candidates.get(key)
            if cand is None or cand.next_check != when:
                continue
            if real_root is None:
                real_root = self.inbox.real_path()  # once a poll, not once a file
            found = self._check(cand, now, real_root)
            if found is not None:
                ready.append(found)
        if len(due) > 64 and len(due) > 4 * len(self.candidates):
            self._compact()
        return ready

    def _compact(self) -> None:
        """Drop stale heap entries (many observes of the same busy files)."""
        self._due = [(c.next_check, next(self._order), k) for k, c in self.candidates.items()]
        heapq.heapify(self._due)

    def _check(self, cand: Candidate, now: float, real_root: str) -> Ready | None:
        key = cand.key
        try:
            path, st = self.inbox.stat_key(key, real_root)
        except (FileNotFoundError, NotADirectoryError, UnsafeKey):
            del self.candidates[key]  # gone, or a symlink out of the inbox
            return None
        except OSError:
            self._schedule(cand, now + self.interval)
            return None
        if not statmod.S_ISREG(st.st_mode):
            del self.candidates[key]
            return None
        sig = signature(st)
        if sig != cand.sig:
            cand.sig, cand.since = sig, now
        quiet_for = now - cand.since
        if st.st_size == 0:
            # Not a job until it has content; a later write event brings it back.
            if quiet_for >= self.quiet:
                del self.candidates[key]
            else:
                self._schedule(cand, now + self.interval)
            return None
        old_already = self.trust_ctime and (
            self.wallclock() - max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 >= self.quiet
        )
        if self.is_open(key) and quiet_for < self.open_timeout:
            self._schedule(cand, now + self.interval)
            return None
        if quiet_for >= self.quiet or old_already:
            if self.is_open(key):
                log.warning("%s is still open but unchanged for %.0f s; taking it", key, quiet_for)
            del self.candidates[key]
            return Ready(key, st, path)
        # Look again soon, and exactly when the window would expire.
        self._schedule(cand, min(now + self.interval, cand.since + self.quiet))
        return None
