"""Watching the inbox: a watchdog observer whose handler only queues keys.

Handlers do nothing slow (watchdog's own advice): they turn event paths into
inbox keys and put them on a queue the daemon's loop drains. A directory that
appears (created or moved in with files inside) queues a scan of it, since
moving a directory in raises one event for the directory, none for its files.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Iterator

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from forgesyte.daemon.selection import Selection
from forgesyte.storage.paths import Root, UnsafeKey

log = logging.getLogger("forgesyte.watch")

FILE = "file"  # something happened to this file: look at it
SCAN = "scan"  # a directory appeared: scan it
OPENED = "opened"  # a handle was opened on this file
CLOSED = "closed"  # a handle was closed (after writing or not)


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
        if isinstance(path, bytes):
            path = os.fsdecode(path)
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


def scan(inbox: Root, selection: Selection, under: str | None = None) -> Iterator[str]:
    """Every wanted file key below the inbox (or below key `under`); links not followed."""
    top = inbox.path_for(under) if under else inbox.path
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        rel = os.path.relpath(dirpath, inbox.path)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        dirnames[:] = [d for d in dirnames if not selection.ignored(d)]
        for name in filenames:
            key = prefix + name
            if selection.wants(key):
                yield key


class InboxWatcher:
    """Owns the observer; restartable, so a dead observer never goes silent."""

    def __init__(self, inbox: Root, selection: Selection, polling: bool, polling_interval: float):
        self.inbox = inbox
        self.selection = selection
        self.polling = polling
        self.polling_interval = polling_interval
        self.events: "queue.Queue[tuple[str, str]]" = queue.Queue()
        self._observer = None
        self._lock = threading.Lock()
        self.overflow = OverflowDetector()
        logging.getLogger("watchdog.observers").addHandler(self.overflow)

    def start(self) -> None:
        with self._lock:
            if self.polling:
                observer = PollingObserver(timeout=self.polling_interval)
            else:
                observer = Observer()
            observer.schedule(
                InboxHandler(self.inbox, self.selection, self.events), str(self.inbox.path), recursive=True
            )
            observer.daemon = True
            observer.start()
            self._observer = observer

    def healthy(self) -> bool:
        obs = self._observer
        if obs is None or not obs.is_alive():
            return False
        return all(emitter.is_alive() for emitter in list(obs.emitters))

    def stop(self) -> None:
        with self._lock:
            obs, self._observer = self._observer, None
        if obs is not None:
            obs.stop()
            obs.join(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        logging.getLogger("watchdog.observers").removeHandler(self.overflow)
