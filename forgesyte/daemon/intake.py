"""Intake: inbox events -> settled, hashed files -> job records.

The daemon's loop calls `drain` with the watcher's events and `step` once a
turn. A file is looked at when an event or a scan names it, taken when the
settle gate says it is complete, hashed in a thread (the loop keeps going),
confirmed unchanged, and then decided: known content (nothing, or a touch),
new content for a path whose job has not run yet (that job is updated), or a
new job, marked `duplicate_of` when the same content ran before with the
same plugin chain.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from forgesyte.config import Settings
from forgesyte.daemon.settle import SettleGate, signature
from forgesyte.daemon.watch import CLOSED, OPENED, SCAN
from forgesyte.storage.jobs import PENDING, JobStore
from forgesyte.storage.paths import Root, UnsafeKey

log = logging.getLogger("forgesyte.daemon")

HASH_CHUNK = 4 * 1024 * 1024


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Hashing:
    key: str
    stat: os.stat_result
    future: Future


class Intake:
    def __init__(self, settings: Settings, inbox: Root, store: JobStore, scan_dir: Callable[[str], None]):
        self.settings = settings
        self.inbox = inbox
        self.store = store
        self.scan_dir = scan_dir
        self.open_handles: dict[str, int] = {}  # inbox key -> handles open, from inotify
        self.gate = SettleGate(
            inbox, settings.settle_seconds, trust_ctime=not settings.polling,
            is_open=lambda key: self.open_handles.get(key, 0) > 0,
            open_timeout=settings.open_timeout,
        )
        self.hashing: dict[str, Hashing] = {}
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="forgesyte-hash")

    @property
    def idle(self) -> bool:
        return not self.gate and not self.hashing

    def reconfigure(self, settings: Settings) -> None:
        self.settings = settings
        self.gate.quiet, self.gate.open_timeout = settings.settle_seconds, settings.open_timeout

    def observe(self, key: str) -> None:
        self.gate.observe(key)

    def pause(self) -> None:
        """The inbox is gone: forget what was in flight; a rescan brings it back."""
        self.gate.candidates.clear()
        self.open_handles.clear()

    def forget_open_handles(self) -> None:
        self.open_handles.clear()

    def close(self) -> None:
        self._hasher.shutdown(wait=False, cancel_futures=True)

    def drain(self, events: "queue.Queue[tuple[str, str]]") -> None:
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
            elif key in self.gate.candidates or key in self.hashing or not self._known(key):
                self.gate.observe(key)

    def step(self) -> list[tuple[str, bool]]:
        """Advance the gate and the hashes; returns (job id now pending, newly created)."""
        for ready in self.gate.poll():
            path = str(self.inbox.path_for(ready.key))
            self.hashing[ready.key] = Hashing(ready.key, ready.stat, self._hasher.submit(sha256_file, path))
        pending: list[tuple[str, bool]] = []
        for key in [k for k, h in self.hashing.items() if h.future.done()]:
            item = self.hashing.pop(key)
            try:
                sha = item.future.result()
                after = os.stat(self.inbox.path_for(key))
            except (OSError, UnsafeKey) as exc:
                log.warning("cannot read %s (%s); will look again when it changes", key, exc)
                continue
            if signature(after) != signature(item.stat):
                self.gate.observe(key)  # changed while hashing: not settled after all
                continue
            decided = self._decide(key, after, sha)
            if decided is not None:
                pending.append(decided)
        return pending

    def _known(self, key: str) -> bool:
        """Same size and mtime as the newest job for this path: nothing new to see."""
        latest = self.store.latest_for_input(key)
        if latest is None:
            return False
        try:
            st = os.stat(self.inbox.path_for(key))
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
