"""The event log: every job transition, oldest first, for `forgesyte events`.

    <state>/events/events.log     current file (checksummed records, recordlog.py)
    <state>/events/events.1.log   the previous file, after a rotation

The first record of each file is a header naming the format and its version;
every other record is one transition: {"time", "job_id", "input", "status",
"error"}, or a mark {"journal": seq, "gen": gen} (readers skip marks). The
writer (whoever holds the state lock, normally the daemon) buffers and
appends at each store flush, right after the job journal; the file rotates at
MAX_BYTES, so the log keeps between one and two files' worth of history. A
reader follows the log with a cursor (inode, offset) that survives one
rotation.

The mark is the journal's witness: it says which journal record this flush
wrote. A journal that ends (torn) before the last marked record was cut by
damage, not by a crash mid-append (the mark is written only after the journal
append succeeded), so recovery refuses to cut it quietly (recovery.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgesyte.storage import recordlog
from forgesyte.storage.errors import StateDamaged, StateError

EVENTS_DIR = "events"
CURRENT = "events.log"
PREVIOUS = "events.1.log"
FORMAT = "forgesyte-events"
VERSION = 1
MAX_BYTES = 16 * 1024 * 1024


class EventLogError(StateDamaged):
    """The log cannot be read (no header, another version): one sentence naming the file
    relative to the state folder, like every other state file."""

    def __init__(self, name: str, problem: str):
        super().__init__(name, problem, "the daemon moves it to quarantine/ and starts a new log when it "
                         "starts (or run `forgesyte fsck --repair`)")


@dataclass(frozen=True)
class Cursor:
    inode: int
    offset: int


def event_of(job: dict[str, Any], time: str) -> dict[str, Any]:
    return {"time": time, "job_id": job["id"], "input": job["input"], "status": job["status"],
            "error": job.get("error")}


class EventLog:
    """The writer's side: add() buffers, flush() appends (and rotates)."""

    def __init__(self, state_dir: Path | str):
        self.dir = Path(state_dir) / EVENTS_DIR
        self._buffer: list[dict[str, Any]] = []

    def add(self, event: dict[str, Any]) -> None:
        self._buffer.append(event)

    def mark(self, seq: int, gen: int) -> None:
        """The journal record `seq` (of generation `gen`) is durable."""
        self._buffer.append({"journal": seq, "gen": gen})

    @property
    def dirty(self) -> bool:
        return bool(self._buffer)

    def flush(self) -> None:
        if not self._buffer:
            return
        os.makedirs(self.dir, mode=0o750, exist_ok=True)
        path = self.dir / CURRENT
        records = list(self._buffer)
        if not path.exists() or path.stat().st_size == 0:
            records.insert(0, {"format": FORMAT, "version": VERSION})
        size = recordlog.append(path, records)
        self._buffer.clear()
        if size > MAX_BYTES:
            os.replace(path, self.dir / PREVIOUS)


def _check_header(path: Path, record: dict[str, Any] | None) -> None:
    try:
        recordlog.check_header(f"{EVENTS_DIR}/{path.name}", record, FORMAT, VERSION)
    except StateError as exc:  # the event log's own error: it says how the log recovers
        raise EventLogError(exc.name, exc.problem) from None


def _read_from(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Verified events from `offset`; damaged lines are skipped (they are derived history)."""
    events: list[dict[str, Any]] = []
    end = offset
    try:
        for position, record in recordlog.scan(path, offset):
            if end == 0:
                _check_header(path, record)
            elif record is not None and "job_id" in record:
                events.append(record)
            end = position
    except FileNotFoundError:
        pass  # rotated or removed between listing and reading: nothing more to read here
    except OSError as exc:
        raise EventLogError(f"{EVENTS_DIR}/{path.name}", f"cannot be read ({exc.strerror or exc})") from None
    return events, end


def read_events(state_dir: Path | str, since: str | None = None,
                cursor: Cursor | None = None) -> tuple[list[dict[str, Any]], Cursor | None]:
    """Events oldest first (those at or after ISO time `since`), and a cursor to continue
    from. With a cursor, only events written after it (across one rotation)."""
    folder = Path(state_dir) / EVENTS_DIR
    current, previous = folder / CURRENT, folder / PREVIOUS
    try:
        inode = current.stat().st_ino
    except FileNotFoundError:
        inode = None
    events: list[dict[str, Any]] = []
    if cursor is None:
        if previous.exists():
            events.extend(_read_from(previous, 0)[0])
        start = 0
    elif cursor.inode != inode:
        # Rotated since: finish the file we were reading (now the previous one), if it is.
        if previous.exists() and previous.stat().st_ino == cursor.inode:
            events.extend(_read_from(previous, cursor.offset)[0])
        start = 0
    else:
        start = cursor.offset
    if inode is None:
        return _since(events, since), cursor
    more, end = _read_from(current, start)
    events.extend(more)
    return _since(events, since), Cursor(inode, end)


def _since(events: list[dict[str, Any]], since: str | None) -> list[dict[str, Any]]:
    return events if since is None else [e for e in events if e.get("time", "") >= since]


def last_mark(state_dir: Path | str) -> tuple[int, int] | None:
    """(gen, seq) of the newest journal mark in the log, or None (no log, no mark)."""
    folder = Path(state_dir) / EVENTS_DIR
    for name in (CURRENT, PREVIOUS):
        try:
            with open(folder / name, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, size - 256 * 1024))
                tail = fh.read()
        except OSError:
            continue
        for record in reversed(recordlog.scan_all(tail).records):
            if isinstance(record.get("journal"), int) and isinstance(record.get("gen"), int):
                return record["gen"], record["journal"]
    return None
