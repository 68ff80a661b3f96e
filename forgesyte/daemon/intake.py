"""Intake: inbox events and scans -> settled, hashed files -> job records.

A file is looked at when an event or a scan names it, taken when the settle
gate says it is complete, hashed in a thread (the loop keeps going),
confirmed unchanged, and then decided: known content (nothing, or a touch),
new content for a path whose job has not run yet (that job is updated), or a
new job, marked `duplicate_of` when the same content ran before with the
same plugin chain.

It streams, so a library of 100,000 files already in the inbox at start is
registered while the first jobs run, never all before them:

* the scan thread hands keys over through a bounded feed (`feed`) and waits
  when it is full, so no list of the whole inbox is ever held;
* keys are taken from the feed only while fewer than PIPELINE files are in
  the gate or being hashed, and at most HASH_AHEAD are being hashed;
* each `step` does at most TURN_BUDGET seconds of work, then returns, so the
  daemon's loop dispatches jobs and reads worker results between steps; half
  of the budget goes to turning hashed files into jobs, half to keeping the
  pipeline full; `wait_hint` tells the loop how soon there is more to do.

Watchdog events are never blocked or dropped: `drain` moves them into an
ordered set (a file written in 1,000 chunks is one hint, not 1,000) that
`step` works through within its budget.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from forgesyte.config import Settings
from forgesyte.daemon.settle import SettleGate, signature
from forgesyte.daemon.watch import CLOSED, OPENED, SCAN
from forgesyte.storage.jobs import PENDING, JobStore
from forgesyte.storage.paths import Root, UnsafeKey

log = logging.getLogger("forgesyte.daemon")

HASH_CHUNK = 4 * 1024 * 1024
HASH_THREADS = 2  # small files: per-file latency overlaps; big ones: two streams, not a disk thrash
HASH_AHEAD = 64  # files being hashed (or hashed, not yet decided) at most
PIPELINE = 512  # files taken from the scan feed and not yet decided, at most
SCAN_AHEAD = 2048  # scanned keys waiting in the feed; the scan thread waits beyond that
TURN_BUDGET = 0.010  # seconds of intake work per loop turn


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(slots=True)
class Hashing:
    key: str
    stat: os.stat_result
    path: str
    future: Future


class Intake:
    def __init__(self, settings: Settings, inbox: Root, store: JobStore, scan_dir: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.inbox = inbox
        self.store = store
        self.scan_dir = scan_dir
        self.clock = clock
        self.open_handles: dict[str, int] = {}  # inbox key -> handles open, from inotify
        self.gate = SettleGate(
            inbox, settings.settle_seconds, trust_ctime=not settings.polling,
            is_open=lambda key: self.open_handles.get(key, 0) > 0,
            open_timeout=settings.open_timeout,
        )
        self.hashing: dict[str, Hashing] = {}
        self._hinted: dict[str, None] = {}  # keys named by watchdog events, oldest first
        self._scanned: queue.Queue[str] = queue.Queue(SCAN_AHEAD)
        self._hashed: queue.SimpleQueue[str] = queue.SimpleQueue()  # keys whose hash finished
        self._feed_epoch = 0  # pause() ends the scans feeding an inbox that went away
        self._feed_lock = threading.Lock()
        self._closed = threading.Event()
        self._hasher = ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="forgesyte-hash")
        self._real_root: str | None = None

    # -- state -------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        return not (self.gate or self.hashing or self._hinted or self._scanned.qsize())

    @property
    def _room(self) -> int:
        """How many more scanned files the pipeline takes now."""
        return PIPELINE - len(self.gate) - len(self.hashing)

    def wait_hint(self) -> float | None:
        """Seconds the loop may wait before there is intake work: 0 now, a few ms while
        hashes are in flight, until the gate's next check, or None (nothing to do)."""
        if self._hinted or not self._hashed.empty() or (self._scanned.qsize() and self._room > 0):
            return 0.0
        waits = [0.005] if self.hashing else []
        due = self.gate.next_due()
        if due is not None and len(self.hashing) < HASH_AHEAD:  # else the gate must wait anyway
            waits.append(max(0.0, due - self.gate.clock()))
        return min(waits) if waits else None

    def reconfigure(self, settings: Settings) -> None:
        self.settings = settings
        self.gate.quiet, self.gate.open_timeout = settings.settle_seconds, settings.open_timeout

    def observe(self, key: str) -> None:
        self.gate.observe(key)

    def pause(self) -> None:
        """The inbox is gone: forget what was in flight and stop the scans feeding it;
        a rescan brings everything back."""
        with self._feed_lock:
            self._feed_epoch += 1
            while True:
                try:
                    self._scanned.get_nowait()
                except queue.Empty:
                    break
        self.gate.clear()
        self.open_handles.clear()
        self._hinted.clear()

    def forget_open_handles(self) -> None:
        self.open_handles.clear()

    def close(self) -> None:
        self._closed.set()
        self._hasher.shutdown(wait=False, cancel_futures=True)

    # -- input -------------------------------------------------------------------
    @property
    def feed_epoch(self) -> int:
        return self._feed_epoch

    def feed(self, key: str, epoch: int) -> bool:
        """From the scan thread: hand over one key, waiting while the feed is full.
        False: stop scanning (the daemon is stopping, or the inbox went away)."""
        while not self._closed.is_set():
            with self._feed_lock:  # so pause() cannot miss a key put while it clears the feed
                if epoch != self._feed_epoch:
                    return False
                try:
                    self._scanned.put_nowait(key)
                    return True
                except queue.Full:
                    pass
            self._closed.wait(0.005)
        return False

    def drain(self, events: queue.Queue[tuple[str, str]]) -> None:
        """Take every watchdog event now (cheap); the files they name are looked at in `step`."""
        while True:
            try:
                kind, key = events.get_nowait()
            except queue.Empty:
                return
            if kind == OPENED:
                self.open_handles[key] = self.open_handles.get(key, 0) + 1
            elif kind == CLOSED:
                left = self.open_handles.pop(key, 0) - 1
                if left > 0:
                    self.open_handles[key] = left
            elif kind == SCAN:
                self.scan_dir(key)
            else:
                self._hinted[key] = None

    # -- one turn ----------------------------------------------------------------
    def step(self, budget: float = TURN_BUDGET) -> list[tuple[str, bool]]:
        """Advance hints, scan feed, gate and hashes for about `budget` seconds;
        returns (job id now pending, newly created)."""
        start = self.clock()
        pending: list[tuple[str, bool]] = []
        self._decide_until(start + budget / 2, pending)
        self._refill_until(start + budget)
        self._decide_until(start + budget, pending)
        return pending

    def _refill_until(self, deadline: float) -> None:
        """Watchdog hints, then scanned keys while there is room; then the gate's ready
        files go to the hashers."""
        clock = self.clock
        self._real_root = None  # taken at most once a step, when a known file needs a stat
        while self._hinted and clock() < deadline:
            key = next(iter(self._hinted))
            del self._hinted[key]
            self._consider(key)
        while self._room > 0 and clock() < deadline:
            try:
                key = self._scanned.get_nowait()
            except queue.Empty:
                break
            self._consider(key)
        for ready in self.gate.poll(limit=max(0, HASH_AHEAD - len(self.hashing)), until=deadline):
            future = self._hasher.submit(sha256_file, ready.path)
            self.hashing[ready.key] = Hashing(ready.key, ready.stat, ready.path, future)
            future.add_done_callback(lambda _f, key=ready.key: self._hashed.put(key))

    def _consider(self, key: str) -> None:
        if key in self.gate.candidates or key in self.hashing or not self._known(key):
            self.gate.observe(key)

    def _decide_until(self, deadline: float, pending: list[tuple[str, bool]]) -> None:
        while self.clock() < deadline:
            try:
                key = self._hashed.get_nowait()
            except queue.Empty:
                return
            item = self.hashing.get(key)
            if item is None or not item.future.done():
                continue  # superseded by a newer hash of the same file; its own callback follows
            del self.hashing[key]
            if item.future.cancelled():
                continue
            try:
                sha = item.future.result()
                after = os.stat(item.path)
            except OSError as exc:
                log.warning("cannot read %s (%s); will look again when it changes", key, exc)
                continue
            if signature(after) != signature(item.stat):
                self.gate.observe(key)  # changed while hashing: not settled after all
                continue
            decided = self._decide(key, after, sha)
            if decided is not None:
                pending.append(decided)

    def _known(self, key: str) -> bool:
        """Same size and mtime as the newest job for this path: nothing new to see."""
        latest = self.store.latest_for_input(key)
        if latest is None:
            return False
        try:
            if self._real_root is None:
                self._real_root = self.inbox.real_path()
            st = self.inbox.stat_key(key, self._real_root)[1]
        except (OSError, UnsafeKey):
            return True  # gone or unsafe: nothing to take
        return (st.st_size, st.st_mtime_ns) == (latest["size"], latest["mtime_ns"])

    def _pending(self, job_id: str) -> bool:
        return self.store.is_active(job_id) and self.store.status_of(job_id) == PENDING

    def _decide(self, key: str, st: os.stat_result, sha: str) -> tuple[str, bool] | None:
        latest = self.store.latest_for_input(key)
        if latest is not None and latest["sha256"] == sha:
            if latest["mtime_ns"] != st.st_mtime_ns:
                self.store.touch_input(latest["id"], st.st_mtime_ns)
            return (latest["id"], False) if self._pending(latest["id"]) else None
        plugins = list(self.settings.chain_for(key)[0])
        original = self.store.first_with_sha(sha)
        duplicate_of = original["id"] if original is not None and original["plugins"] == plugins else None
        if latest is not None and self._pending(latest["id"]):
            job = self.store.resettle(latest["id"], size=st.st_size, mtime_ns=st.st_mtime_ns,
                                      sha256=sha, duplicate_of=duplicate_of)
            log.info("job %s %s: input changed before it ran; updated", job["id"], key)
            return job["id"], False
        job = self.store.create(key, size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=sha,
                                plugins=plugins, duplicate_of=duplicate_of)
        log.info("job %s %s: pending%s", job["id"], key, f" (same content as {duplicate_of})" if duplicate_of else "")
        return job["id"], True
