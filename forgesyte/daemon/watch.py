"""Watching the inbox: a watchdog observer whose handler only queues keys.

Handlers do nothing slow (watchdog's own advice): they turn event paths into
inbox keys and put them on a queue the daemon's loop drains. A directory that
appears (created or moved in with files inside) queues a scan of it, since
moving a directory in raises one event for the directory, none for its files.

When inotify watches run out (fs.inotify.max_user_watches), the kernel refuses
the watch for some folders and watchdog carries on without them, silently. So
every scan compares the folders it walked with the watches this process holds
(/proc/self/fdinfo, the kernel's own list), and `Coverage` polls the folders
without one every POLL_UNWATCHED seconds, after one warning that names the
limit and how to raise it. If even the inbox itself cannot be watched, the
whole inbox is polled (watchdog's polling observer).
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import threading
import time
from typing import Iterator

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from forgesyte.conditions import Condition
from forgesyte.daemon.selection import Selection
from forgesyte.storage.paths import Root, UnsafeKey, key_from_name

log = logging.getLogger("forgesyte.watch")

FILE = "file"  # something happened to this file: look at it
SCAN = "scan"  # a directory appeared: scan it
OPENED = "opened"  # a handle was opened on this file
CLOSED = "closed"  # a handle was closed (after writing or not)

POLL_UNWATCHED = 10.0  # seconds between looks at folders the kernel would not watch
CONFIRM_AFTER = 1.0  # a folder unwatched this long is not just one watchdog has yet to add
WATCHES_SYSCTL = "/proc/sys/fs/inotify/max_user_watches"
WATCHES_USERNS = "/proc/sys/user/max_inotify_watches"
INSTANCES_SYSCTL = "/proc/sys/fs/inotify/max_user_instances"


class OverflowDetector(logging.Handler):
    """Watchdog rebuilds its inotify watches after a kernel queue overflow but
    only logs it; this turns that log record into a flag so the daemon rescans
    at once instead of waiting for the periodic scan."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.flag = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.flag.set()


class InboxHandler(FileSystemEventHandler):
    def __init__(self, inbox: Root, selection: Selection, events: "queue.Queue[tuple[str, str]]"):
        self.inbox = inbox
        self.selection = selection
        self.events = events

    def _key(self, path: str | bytes) -> str | None:
        try:
            return self.inbox.key_for(path)
        except UnsafeKey:
            return None

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type == "deleted":
            return
        path = getattr(event, "dest_path", "") or event.src_path
        key = self._key(path)
        if key is None:
            return
        if event.is_directory:
            if event.event_type in ("created", "moved") and self.selection.wants_dir(key):
                self.events.put((SCAN, key))
        elif self.selection.wants(key):
            if event.event_type == "opened":
                self.events.put((OPENED, key))
            elif event.event_type == "closed_no_write":
                self.events.put((CLOSED, key))
            elif event.event_type == "closed":
                self.events.put((CLOSED, key))
                self.events.put((FILE, key))
            else:
                self.events.put((FILE, key))


def scan(inbox: Root, selection: Selection, under: str | None = None,
         coverage: "Coverage | None" = None) -> Iterator[str]:
    """Every wanted file key below the inbox (or below key `under`); links not followed.
    With `coverage`, the folders walked are checked against the inotify watches held."""
    top = inbox.path_for(under) if under else inbox.path
    folders: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        rel = os.path.relpath(dirpath, inbox.path)
        prefix = "" if rel == "." else key_from_name(rel) + "/"
        dirnames[:] = [d for d in dirnames if not selection.ignored(key_from_name(d))]
        if coverage is not None:
            try:
                st = os.stat(dirpath)
                folders[prefix.rstrip("/")] = st.st_ino
            except OSError:
                pass
        for name in filenames:
            key = prefix + key_from_name(name)
            if selection.wants(key):
                yield key
    if coverage is not None:
        coverage.update(under, folders)


def watched_inodes() -> set[int] | None:
    """Inode numbers of every inotify watch this process holds, from the kernel's
    /proc/self/fdinfo; None where that cannot be read (then nothing is checked).

    Inode numbers only: fdinfo's sdev is the superblock's device, which differs from
    stat()'s st_dev on btrfs subvolumes; one inbox rarely spans file systems."""
    found: set[int] = set()
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/self/fdinfo/{fd}") as fh:
                lines = fh.read().splitlines()
        except OSError:
            continue
        for line in lines:
            if not line.startswith("inotify "):
                continue
            fields = dict(part.split(":", 1) for part in line.split()[1:] if ":" in part)
            try:
                found.add(int(fields["ino"], 16))
            except (KeyError, ValueError):
                continue
    return found


def _read_int(path: str) -> int | None:
    try:
        with open(path) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def limit_text() -> str:
    """What the watch limit is now, as a person would look it up."""
    limit = _read_int(WATCHES_SYSCTL)
    userns = _read_int(WATCHES_USERNS)
    if limit is None:
        return "fs.inotify.max_user_watches"
    shown = f"fs.inotify.max_user_watches is {limit}"
    if userns is not None and userns < limit:
        shown += f" (and {userns} in this user namespace)"
    return shown


def raise_text() -> str:
    """How to raise the limit."""
    suggested = max(524288, 2 * (_read_int(WATCHES_SYSCTL) or 0))
    return (f"raise the limit: sysctl -w fs.inotify.max_user_watches={suggested} "
            "(persist it in /etc/sysctl.d/), or run with --polling")


def watch_limit_advice(folders: int) -> str:
    """The sentence that names the limit and how to raise it."""
    return (f"the kernel refused inotify watches for {folders} inbox folder{'s' if folders != 1 else ''} "
            f"({limit_text()}, shared by every process of this user); they are polled every "
            f"{POLL_UNWATCHED:g} s instead; {raise_text()}")


class Coverage:
    """Inbox folders without an inotify watch, and the poller that covers them."""

    def __init__(self, inbox: Root, selection: Selection, events: "queue.Queue[tuple[str, str]]"):
        self.inbox = inbox
        self.selection = selection
        self.events = events
        self.enabled = True  # off for the polling observer: it watches everything by stat
        self._lock = threading.Lock()
        self.unwatched: dict[str, float] = {}  # folder key -> when first seen unwatched
        self._seen: dict[str, tuple[int, int]] = {}  # file key -> (size, mtime_ns) last polled
        self.condition = Condition("inotify-watches", log)

    def update(self, under: str | None, folders: dict[str, int]) -> None:
        """A scan of `under` (None: the whole inbox) walked `folders` (key -> inode)."""
        if not self.enabled:
            return
        watched = watched_inodes()
        if watched is None:
            return
        now = time.monotonic()
        missing = {key for key, ino in folders.items() if ino not in watched}
        with self._lock:
            if under is None:
                stale = [k for k in self.unwatched if k not in missing]
            else:
                stale = [k for k in self.unwatched
                         if (k == under or k.startswith(under + "/")) and k not in missing]
            for key in stale:
                del self.unwatched[key]
            for key in missing:
                self.unwatched.setdefault(key, now)
        self._report()

    def _report(self) -> None:
        now = time.monotonic()
        with self._lock:
            confirmed = sum(1 for since in self.unwatched.values() if now - since >= CONFIRM_AFTER)
        if confirmed:
            self.condition.report(watch_limit_advice(confirmed), folders=confirmed,
                                  limit=_read_int(WATCHES_SYSCTL))
        elif not self.unwatched:
            self.condition.clear("every inbox folder has an inotify watch again; polling stopped")

    def poll(self) -> None:
        """Look into every unwatched folder: queue new or changed files, adopt new
        subfolders (nobody watches them either), drop folders watched again or gone."""
        with self._lock:
            keys = list(self.unwatched)
        if not keys or not self.enabled:
            return
        watched = watched_inodes() or set()
        seen: dict[str, tuple[int, int]] = {}
        todo = list(keys)
        now = time.monotonic()
        while todo:
            key = todo.pop()
            try:
                path = self.inbox.path_for(key) if key else self.inbox.path
                st = os.stat(path)
                if st.st_ino in watched:
                    raise FileNotFoundError
                with os.scandir(path) as entries:
                    listing = list(entries)
            except (OSError, UnsafeKey):
                with self._lock:
                    self.unwatched.pop(key, None)
                continue
            prefix = key + "/" if key else ""
            for entry in listing:
                child = prefix + key_from_name(entry.name)
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if self.selection.ignored(key_from_name(entry.name)):
                            continue
                        est = entry.stat(follow_symlinks=False)
                        with self._lock:
                            fresh = child not in self.unwatched and est.st_ino not in watched
                            if fresh:
                                self.unwatched[child] = now
                        if fresh:
                            todo.append(child)
                    elif self.selection.wants(child):
                        est = entry.stat()
                        seen[child] = (est.st_size, est.st_mtime_ns)
                        if self._seen.get(child) != seen[child]:
                            self.events.put((FILE, child))
                except OSError:
                    continue
        self._seen = seen
        self._report()


class InboxWatcher:
    """Owns the observer; restartable, so a dead observer never goes silent."""

    def __init__(self, inbox: Root, selection: Selection, polling: bool, polling_interval: float):
        self.inbox = inbox
        self.selection = selection
        self.polling = polling
        self.polling_interval = polling_interval
        self.events: "queue.Queue[tuple[str, str]]" = queue.Queue()
        self.coverage = Coverage(inbox, selection, self.events)
        self._observer = None
        self._lock = threading.Lock()
        self._poller: threading.Thread | None = None
        self._stop_polling = threading.Event()
        self.overflow = OverflowDetector()
        logging.getLogger("watchdog.observers").addHandler(self.overflow)

    def _inotify_observer(self):
        """An inotify observer, or None when the kernel refuses even the inbox's watch."""
        observer = None
        try:
            observer = Observer()
            observer.schedule(InboxHandler(self.inbox, self.selection, self.events),
                              str(self.inbox.path), recursive=True)
            observer.start()
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EMFILE):
                raise
            if observer is not None:
                try:
                    observer.stop()
                except Exception:  # pragma: no cover - best effort on a half-started observer
                    pass
            if exc.errno == errno.ENOSPC:
                what, fix = limit_text(), raise_text()
            else:
                what = f"fs.inotify.max_user_instances is {_read_int(INSTANCES_SYSCTL)}"
                fix = ("raise the limit: sysctl -w fs.inotify.max_user_instances=1024 "
                       "(persist it in /etc/sysctl.d/), or run with --polling")
            self.coverage.condition.report(
                f"the kernel refused to watch the inbox itself ({what}); polling the whole inbox "
                f"every {self.polling_interval:g} s instead; {fix}", folders=None)
            return None
        return observer

    def start(self) -> None:
        with self._lock:
            observer = None if self.polling else self._inotify_observer()
            self.coverage.enabled = observer is not None
            if observer is None:
                observer = PollingObserver(timeout=self.polling_interval)
                observer.schedule(InboxHandler(self.inbox, self.selection, self.events),
                                  str(self.inbox.path), recursive=True)
                observer.daemon = True
                observer.start()
            self._observer = observer
            if self.coverage.enabled and self._poller is None:
                self._stop_polling.clear()
                self._poller = threading.Thread(target=self._poll_loop, name="forgesyte-coverage",
                                                daemon=True)
                self._poller.start()

    def _poll_loop(self) -> None:
        while not self._stop_polling.wait(POLL_UNWATCHED):
            try:
                self.coverage.poll()
            except Exception:  # never let the safety net die silently
                log.exception("polling unwatched inbox folders failed")

    def healthy(self) -> bool:
        obs = self._observer
        if obs is None or not obs.is_alive():
            return False
        return all(emitter.is_alive() for emitter in list(obs.emitters))

    def stop(self) -> None:
        with self._lock:
            obs, self._observer = self._observer, None
            poller, self._poller = self._poller, None
        self._stop_polling.set()
        if obs is not None:
            obs.stop()
            obs.join(timeout=5)
        if poller is not None:
            poller.join(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        logging.getLogger("watchdog.observers").removeHandler(self.overflow)
