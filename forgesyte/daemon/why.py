"""`forgesyte why PATH`: is this inbox file a job, and if not, why not.

The same questions the intake asks, in the same order, answered for one key:
a job already? ignored name? video extension? symlink out of the inbox? a
regular file, non-empty, readable? still being written? With a daemon
running, the request goes through the mailbox and `live` is the intake's own
view (settle gate, open handles, hashing), so the answer is what the daemon
knows rather than a guess; without one, the answer is decided from the file.

The answer is a dict: {"path", "job" (record or null), "verdict", "reason"
(one sentence), "pattern", "since"}; `verdict` is one of VERDICTS.
"""

from __future__ import annotations

import os
import stat as statmod
import time
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from typing import Any, Callable

from forgesyte.config import Settings
from forgesyte.daemon.selection import Selection
from forgesyte.storage.ids import iso_utc
from forgesyte.storage.jobs import JobNotFound, JobStore, public_record
from forgesyte.storage.paths import Root, UnsafeKey, name_from_key
from forgesyte.text import display

VERDICTS = (
    "job",          # it is a job (its record is in "job")
    "missing",      # no such file in the inbox
    "invalid",      # not a path inside the inbox
    "ignored",      # a path component matches an ignore pattern ("pattern")
    "not-video",    # the extension is not a video extension
    "outside",      # a symlink that leads out of the inbox
    "not-file",     # a directory, fifo, socket, device
    "empty",        # zero bytes: a job once it has content
    "unreadable",   # the daemon (or, without one, this user) cannot read it
    "writing",      # still changing, or held open by a writer ("since": last change)
    "hashing",      # settled; its content is being hashed right now
    "pruned",       # its job was pruned; the same content is not taken again
    "waiting",      # nothing wrong: it becomes a job when a daemon looks at it
)


def _when(epoch: float) -> str:
    return iso_utc(datetime.fromtimestamp(epoch, timezone.utc))


def _ago(epoch: float) -> str:
    seconds = max(0.0, time.time() - epoch)
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.0f} min"


def _answer(key: str, verdict: str, reason: str, job: dict | None = None,
            pattern: str | None = None, since: str | None = None) -> dict[str, Any]:
    return {"path": key, "job": job, "verdict": verdict, "reason": reason,
            "pattern": pattern, "since": since}


def _writers(path: str) -> list[str]:
    """Processes this user can see holding `path` open for writing: 'cp (pid 123)'."""
    try:
        target = os.path.realpath(path)
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []
    found = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") != target:
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
                    flags = int(next(l for l in fh if l.startswith("flags:")).split()[1], 8)
            except (OSError, StopIteration, ValueError):
                continue
            if flags & (os.O_WRONLY | os.O_RDWR):
                try:
                    with open(f"/proc/{pid}/comm") as fh:
                        name = fh.read().strip()
                except OSError:
                    name = "?"
                found.append(f"{display(name)} (pid {pid})")
                break
    return found


def explain(settings: Settings, store: JobStore, key: str,
            live: Callable[[str], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Why `key` (relative to the inbox) is or is not a job; see the module docstring."""
    shown = display(key)
    try:
        Root.check_key(key)
    except UnsafeKey:
        return _answer(key, "invalid", f"{shown} is not a path inside the inbox.")
    inbox = Root(settings.inbox)
    path = os.path.join(str(settings.inbox), name_from_key(key))
    try:
        lst = os.lstat(path)
    except OSError:
        lst = None

    latest = store.latest_for_input(key)
    record = None
    if latest is not None:
        try:
            record = public_record(store.get(latest["id"]))
        except JobNotFound:
            record = None
        same = lst is None or unchanged(path, latest)
        if record is not None and same:
            where = "" if lst is not None else "; the file is no longer in the inbox"
            return _answer(key, "job", f"{shown} is job {record['id']} ({record['status']}){where}.", record)
        if record is None and same and lst is not None:
            return _answer(key, "pruned", (
                f"{shown} was job {latest['id']}, since pruned; the same file is not taken again "
                "(copy it under a new name to process it again)."))
    changed = "" if record is None else f" It was job {record['id']} ({record['status']}); the file has changed since."

    if lst is None:
        return _answer(key, "missing", f"There is no {shown} in the inbox {settings.inbox}.")
    selection = Selection(settings.video_extensions, settings.ignore_patterns)
    parts = key.split("/")
    for number, part in enumerate(parts):
        if selection.ignored(part):
            pattern = next((p for p in settings.ignore_patterns if fnmatchcase(part, p)), None)
            what = "its name" if number == len(parts) - 1 else f"the folder {display(part)!r}"
            which = f"the ignore pattern {pattern!r}" if pattern else "an ignore pattern"
            return _answer(key, "ignored", f"{shown} is ignored: {what} matches {which}.{changed}",
                           record, pattern)
    stem, dot, ext = parts[-1].rpartition(".")
    if not selection.wants(key):
        what = f"the extension {'.' + display(ext)!r}" if dot and stem else "no extension"
        return _answer(key, "not-video", (f"{shown} is not taken: it has {what}, which is not a video "
                                          f"extension ({', '.join(settings.video_extensions)}).{changed}"),
                       record)
    try:
        inbox.path_for(key)
    except UnsafeKey:
        target = display(os.path.realpath(path))
        return _answer(key, "outside", (f"{shown} is a symlink to {target}, outside the inbox; links "
                                        f"out of the inbox are not followed.{changed}"), record)
    try:
        st = os.stat(path)
    except OSError as exc:
        return _answer(key, "missing", f"{shown} is a broken symlink ({exc.strerror}).{changed}", record)
    if not statmod.S_ISREG(st.st_mode):
        kind = "a directory" if statmod.S_ISDIR(st.st_mode) else "not a regular file"
        return _answer(key, "not-file", f"{shown} is {kind}, so it is not a job.", record)
    if st.st_size == 0:
        return _answer(key, "empty", f"{shown} is empty; it becomes a job once it has content.{changed}",
                       record)
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        who = "the daemon's user" if live is not None else "this user"
        return _answer(key, "unreadable", f"{shown} cannot be read by {who} ({exc.strerror}).{changed}",
                       record)

    last_change = max(st.st_mtime_ns, st.st_ctime_ns) / 1e9
    since = _when(last_change)
    if live is not None:
        view = live(key)
        if view.get("paused"):
            return _answer(key, "waiting", (f"{shown} waits: the daemon paused intake because the inbox "
                                            f"looked unmounted.{changed}"), record)
        if view.get("hashing"):
            return _answer(key, "hashing", f"{shown} has settled and is being hashed now.{changed}",
                           record, since=since)
        if view.get("candidate"):
            since = view.get("since") or since
            if view.get("open"):
                writers = _writers(path)
                who = f" by {', '.join(writers)}" if writers else ""
                return _answer(key, "writing", (
                    f"{shown} is still being written: it is held open{who}, last changed at {since}; "
                    f"it is taken once closed (or unchanged for {settings.open_timeout:g} s).{changed}"),
                    record, since=since)
            return _answer(key, "writing", (
                f"{shown} is still being written: last changed at {since}; it is taken once unchanged "
                f"for {settings.settle_seconds:g} s.{changed}"), record, since=since)
        if view.get("queued"):
            return _answer(key, "waiting", (f"{shown} is queued for the settle gate, behind "
                                            f"{view.get('backlog', 0)} other files.{changed}"), record, since=since)
        scan = view.get("next_scan_in")
        when = f"; the next full scan is in {scan:.0f} s" if isinstance(scan, (int, float)) else ""
        busy = f" (it is working through {view['backlog']} other files)" if view.get("backlog") else ""
        return _answer(key, "waiting", (f"{shown} looks complete, but the daemon has not come to it "
                                        f"yet{busy}{when}.{changed}"), record, since=since)
    writers = _writers(path)
    if writers:
        return _answer(key, "writing", (f"{shown} is still being written: {', '.join(writers)} holds it "
                                        f"open; last changed at {since}.{changed}"), record, since=since)
    if time.time() - last_change < settings.settle_seconds:
        return _answer(key, "writing", (f"{shown} is still settling: it changed {_ago(last_change)} ago "
                                        f"(at {since}); the settle window is {settings.settle_seconds:g} s."
                                        f"{changed}"), record, since=since)
    return _answer(key, "waiting", (f"{shown} looks complete; no daemon holds this state, so it becomes a "
                                    f"job when one runs (forgesyte run).{changed}"), record, since=since)


def unchanged(path: str, latest: dict[str, Any]) -> bool:
    """The file is what the store knows for its newest job (size and mtime), or is gone
    (then nothing newer will come from it)."""
    try:
        st = os.stat(path)
    except OSError:
        return True
    return (st.st_size, st.st_mtime_ns) == (latest["size"], latest["mtime_ns"])


def live_view(intake: Any, key: str, *, paused: bool = False, next_scan: float | None = None) -> dict[str, Any]:
    """The intake's knowledge of `key`, for explain() in the daemon.

    Read-only and defensive (getattr): the intake's internals may change shape,
    and a missing attribute must make the answer vaguer, never fail it.
    """
    gate = getattr(intake, "gate", None)
    candidates = getattr(gate, "candidates", {}) or {}
    cand = candidates.get(key)
    since = None
    if cand is not None and getattr(cand, "sig", None) is not None:
        # Monotonic to wall clock: when the gate last saw the file change.
        since = _when(time.time() - (time.monotonic() - cand.since))
    handles = getattr(intake, "open_handles", {}) or {}
    hashing = getattr(intake, "hashing", {}) or {}
    backlog = len(candidates) + len(hashing) + len(getattr(intake, "_hinted", {}) or {})
    return {
        "queued": key in (getattr(intake, "_hinted", {}) or {}),
        "backlog": backlog,
        "candidate": cand is not None,
        "since": since,
        "open": handles.get(key, 0) > 0,
        "hashing": key in hashing,
        "paused": paused,
        "next_scan_in": None if next_scan is None else max(0.0, next_scan - time.monotonic()),
    }
