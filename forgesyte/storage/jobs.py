"""The job store: job records in TinyDB chunks, and every status transition in one place.

Lifecycle (the only legal moves, enforced by `_transition`):

    pending --claim--> running --complete--> completed
                         |  \\--fail-------> failed --retry--> pending
                         \\--requeue--> pending    (clean stop or crash recovery)
    pending --fail--> failed                       (input vanished, original failed, cancel)
    pending --complete--> completed                (duplicate reusing a result)

Layout (docs/storage.md has the reasoning; chunks.py, journal.py, index.py):

    <state>/jobs/manifest.json    the chunks, the open journal, counts, the id floor
    <state>/jobs/<id>.<gen>.json  TinyDB chunks of up to 250 consecutive jobs (all statuses)
    <state>/jobs/journal.<gen>.log  one checksummed record per flush: the jobs that changed
    <state>/index/                input key -> newest job; sha256 -> first job (derived)
    <state>/events/               the transition event log (events.py)

A flush appends the jobs that changed to the journal, so its cost does not
depend on how many jobs are pending or on record; a checkpoint (when the
journal reaches JOURNAL_LIMIT) folds the journal into new chunk files and a
new manifest. Readers take the manifest, the journal on top of it, and only
the chunks a query needs. Every record carries `rev`, bumped by every
transition, so the newest version of a job can be told from any older copy
(a results document, a chunk a crash left behind). Opening for writing goes
through recovery.py, the one place that decides what a damaged state means.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

from forgesyte.conditions import Condition
from forgesyte.storage import chunks, journal
from forgesyte.storage.chunks import CHUNK_SIZE, PRUNED, Manifest
from forgesyte.storage.errors import StateDamaged
from forgesyte.storage.events import EventLog, event_of
from forgesyte.storage.ids import JobIds, is_job_id, utc_now
from forgesyte.storage.index import IndexDamaged, lookup_input

PENDING, RUNNING, COMPLETED, FAILED = "pending", "running", "completed", "failed"
STATUSES = (PENDING, RUNNING, COMPLETED, FAILED)
FINISHED = (COMPLETED, FAILED)

_ALLOWED = {
    "claim": ({PENDING}, RUNNING),
    "complete": ({RUNNING, PENDING}, COMPLETED),
    "fail": ({RUNNING, PENDING}, FAILED),
    "requeue": ({RUNNING}, PENDING),
    "retry": ({FAILED}, PENDING),
    "resettle": ({PENDING, RUNNING}, PENDING),
}

JOURNAL_LIMIT = 256 * 1024  # bytes of journal that trigger a checkpoint (every reader parses it)
MAX_DIRTY_CHUNKS = 32  # ... or this many chunks touched since the last one
CACHE_CHUNKS = 8
INTERNAL_FIELDS = ("mtime_ns", "run")
T = TypeVar("T")
log = logging.getLogger("forgesyte.storage")
# Ongoing write trouble is logged when it starts, as a reminder, and when it clears.
_EVENTS_TROUBLE = Condition("event-log-write", log)
_CHECKPOINT_TROUBLE = Condition("checkpoint-write", log)


class JobNotFound(LookupError):
    pass


class AmbiguousJob(LookupError):
    def __init__(self, message: str, candidates: list[str]):
        super().__init__(message)
        self.candidates = candidates


class IllegalTransition(ValueError):
    pass


class _Stale(Exception):
    """A reader's snapshot names a file the writer has since replaced."""


def _status_counts(counts: dict[str, int]) -> dict[str, int]:
    return {status: int(counts.get(status, 0)) for status in STATUSES}


class JobStore:
    """Job records and their transitions.

    `readonly=True` (the CLI's reads): a snapshot; never writes.
    Otherwise the caller must hold the state lock; opening repairs what a crash
    left behind (recovery.py) or raises StateDamaged. `autoflush` (default on)
    writes after every change; the daemon turns it off and calls `flush()`
    once per loop turn.
    """

    def __init__(self, state_dir: Path | str, readonly: bool = False, autoflush: bool = True):
        self.state_dir = Path(state_dir)
        self.readonly = readonly
        self.autoflush = autoflush and not readonly
        self._cache: OrderedDict[str, dict[str, dict[str, Any]]] = OrderedDict()
        if readonly:
            self._load_snapshot()
            return
        from forgesyte.storage.recovery import open_writer

        opened = open_writer(self.state_dir)
        self._manifest: Manifest = opened.manifest
        self._overlay: dict[str, dict[str, Any]] = opened.overlay
        self._counts = _status_counts(opened.counts)
        self._seq = opened.seq
        self._journal_size = opened.journal_size
        self.index = opened.index
        self._ids = JobIds(opened.floor)
        self._unflushed: dict[str, None] = {}
        self._events = EventLog(self.state_dir)
        self._next_checkpoint_try = 0.0

    # -- snapshots (readers) -------------------------------------------------------
    def _load_snapshot(self) -> None:
        from forgesyte.storage.recovery import read_snapshot

        snap = read_snapshot(self.state_dir)
        self._manifest = snap.manifest
        self._overlay = snap.overlay
        self._counts = _status_counts(snap.counts)
        self._cache.clear()

    def reload(self) -> None:
        """Readers: take a fresh snapshot (e.g. a chunk was replaced under us)."""
        if self.readonly:
            self._load_snapshot()

    def _retrying(self, query: Callable[[], T]) -> T:
        """A reader's snapshot may name a file the writer has just replaced: re-snapshot."""
        for _ in range(5):
            try:
                return query()
            except _Stale:
                time.sleep(0.02)
                self.reload()
        try:
            return query()
        except _Stale as stale:
            raise StateDamaged(str(stale), "is named by the manifest but missing") from None

    def close(self) -> None:
        if not self.readonly:
            self.flush()

    # -- chunks ----------------------------------------------------------------------
    def _chunk(self, index: int) -> dict[str, dict[str, Any]]:
        entry = self._manifest.chunks[index]
        records = self._cache.get(entry["name"])
        if records is None:
            try:
                records = chunks.read_chunk(self.state_dir, entry)
            except FileNotFoundError:
                if self.readonly:
                    raise _Stale(chunks.rel(entry["name"])) from None
                raise StateDamaged(chunks.rel(entry["name"]), "is named by the manifest but missing") from None
            self._cache[entry["name"]] = records
            while len(self._cache) > CACHE_CHUNKS:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(entry["name"])
        return records

    def _stored(self, job_id: str) -> dict[str, Any] | None:
        """The record as it stands (tombstones included), or None."""
        record = self._overlay.get(job_id)
        if record is not None:
            return record
        index = self._manifest.chunk_index(job_id)
        return None if index is None else self._chunk(index).get(job_id)

    def _partition(self, index: int) -> dict[str, dict[str, Any]]:
        """Every record chunk `index` holds, with the journal on top."""
        low, high = self._manifest.bounds(index)
        merged = dict(self._chunk(index))
        for job_id, record in self._overlay.items():
            if (low is None or job_id >= low) and (high is None or job_id < high):
                merged[job_id] = record
        return merged

    def _partitions(self, newest_first: bool, wanted: set[str] | None = None
                    ) -> Iterator[list[dict[str, Any]]]:
        """Live records chunk by chunk (sorted by id within each), skipping chunks that
        hold no job in `wanted` statuses (by the manifest's counts and the journal)."""
        order = range(len(self._manifest.chunks))
        if not self._manifest.chunks:
            records = [r for r in self._overlay.values() if r.get("status") != PRUNED]
            yield sorted(records, key=lambda r: r["id"], reverse=newest_first)
            return
        overlay_hits: set[int] = set()
        if wanted is not None:
            for record in self._overlay.values():
                if record.get("status") in wanted:
                    overlay_hits.add(self._manifest.chunk_index(record["id"]))
        for index in (reversed(order) if newest_first else order):
            if wanted is not None and index not in overlay_hits and not any(
                    self._manifest.chunks[index]["counts"].get(s) for s in wanted):
                continue
            records = [r for r in self._partition(index).values() if r.get("status") != PRUNED]
            yield sorted(records, key=lambda r: r["id"], reverse=newest_first)

    # -- reads -------------------------------------------------------------------------
    def get(self, job_id: str) -> dict[str, Any]:
        record = self._retrying(lambda: self._stored(job_id))
        if record is None or record.get("status") == PRUNED:
            raise JobNotFound(f"No job has the id {job_id!r}.")
        return dict(record)

    def is_active(self, job_id: str) -> bool:
        """Pending or running (the jobs the daemon still has work for)."""
        record = self._retrying(lambda: self._stored(job_id))
        return record is not None and record.get("status") in (PENDING, RUNNING)

    def status_of(self, job_id: str) -> str:
        return self.get(job_id)["status"]

    def resolve(self, ref: str) -> dict[str, Any]:
        """A job by id, unique id prefix, or input key (newest job for that input)."""
        if not ref:
            raise JobNotFound("No job matches an empty reference.")
        record = self._retrying(lambda: self._stored(ref)) if is_job_id(ref) else None
        if record is not None and record.get("status") != PRUNED:
            return dict(record)
        latest = self.latest_for_input(ref)
        if latest is not None:
            newest = latest["id"]
            stored = self._retrying(lambda: self._stored(newest))
            if stored is None and self.readonly:  # the index is ahead of our snapshot
                self.reload()
                stored = self._retrying(lambda: self._stored(newest))
            if stored is not None and stored.get("status") != PRUNED:
                return dict(stored)
            if stored is not None:
                raise JobNotFound(f"The newest job for {ref!r} ({newest}) was pruned.")
            raise JobNotFound(f"The newest job for {ref!r} ({newest}) has no record; "
                              "run `forgesyte fsck`.")
        matches = self._retrying(lambda: self._prefix_matches(ref))
        if len(matches) == 1:
            return self.get(matches[0])
        if len(matches) > 1:
            raise AmbiguousJob(f"{ref!r} matches {len(matches)} jobs; give more of the id.", matches)
        raise JobNotFound(f"No job matches {ref!r} (by id, id prefix or input path).")

    def _prefix_matches(self, prefix: str) -> list[str]:
        upper = prefix + "~"  # '~' sorts after every id character
        matches = {i for i, r in self._overlay.items() if i.startswith(prefix) and r.get("status") != PRUNED}
        for index in range(len(self._manifest.chunks)):
            low, high = self._manifest.bounds(index)
            if (high is not None and high < prefix) or (low is not None and low > upper):
                continue
            matches.update(i for i, r in self._chunk(index).items()
                           if i.startswith(prefix) and i not in self._overlay and r.get("status") != PRUNED)
        return sorted(matches)

    def latest_for_input(self, input_key: str) -> dict[str, Any] | None:
        """Facts of the newest job for this input (by creation order): id, size, mtime_ns,
        sha256. Pruned jobs count: their input is known content."""
        if not self.readonly:
            entry = self.index.entry(input_key)
        else:
            entry = self._reader_entry(input_key)
        if entry is None:
            return None
        return {"id": entry[0], "size": entry[1], "mtime_ns": entry[2], "sha256": entry[3]}

    def _reader_entry(self, input_key: str) -> list | None:
        try:
            entry = lookup_input(self.state_dir, input_key)
        except IndexDamaged as exc:
            log.warning("%s Answering from the job records instead (slower).", exc)
            entry = None
            for part in self._retrying(lambda: list(self._all_records())):
                if part["input"] == input_key and (entry is None or part["id"] > entry[0]):
                    entry = [part["id"], part.get("size", 0), part.get("mtime_ns", 0), part.get("sha256")]
            return entry
        for record in self._overlay.values():  # the journal is newer than the index
            if record["input"] == input_key and (entry is None or record["id"] >= entry[0]):
                entry = [record["id"], record.get("size", 0), record.get("mtime_ns", 0), record.get("sha256")]
        return entry

    def _all_records(self) -> Iterator[dict[str, Any]]:
        """Every record, tombstones included (for rebuilding derived data)."""
        if not self._manifest.chunks:
            yield from self._overlay.values()
            return
        for index in range(len(self._manifest.chunks)):
            yield from self._partition(index).values()

    def first_with_sha(self, sha256: str) -> dict[str, Any] | None:
        """The earliest non-duplicate job with this content, if its record still exists."""
        job_id = self.index.original(sha256)
        if job_id is None:
            return None
        record = self._stored(job_id)
        if record is None or record.get("status") == PRUNED or record.get("sha256") != sha256:
            return None  # pruned, or resettled to other content since
        return dict(record)

    def with_status(self, *statuses: str) -> list[dict[str, Any]]:
        """Jobs in these statuses, oldest first."""
        wanted = set(statuses)

        def query() -> list[dict[str, Any]]:
            return [dict(r) for part in self._partitions(False, wanted) for r in part
                    if r.get("status") in wanted]
        found = self._retrying(query)
        if not self.readonly and wanted & {PENDING, RUNNING}:
            self._check_work(found)
        return found

    def _check_work(self, jobs: list[dict[str, Any]]) -> None:
        """The writer is about to act on these records (recovery, dispatch): a record that
        verifies by checksum but not by content (another writer's, a bug's) stops it here,
        named, rather than as a KeyError somewhere in the scheduler. fsck checks them all."""
        from forgesyte.storage.recovery import invalid_record

        for job in jobs:
            problem = invalid_record(job)
            if problem:
                where = (self._manifest.journal if job["id"] in self._overlay or not self._manifest.chunks
                         else self._manifest.chunks[self._manifest.chunk_index(job["id"])]["name"])
                raise StateDamaged(chunks.rel(where), f"holds a job record ({job['id']}) that {problem}")

    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    def newest(self, limit: int | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """Newest first, reading only as many chunks as needed."""
        def query() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            for part in self._partitions(True, {status} if status else None):
                found.extend(dict(r) for r in part if status is None or r.get("status") == status)
                if limit is not None and len(found) >= limit:
                    break  # every later chunk holds only older ids
            return found if limit is None else found[:limit]
        return self._retrying(query)

    def all(self) -> list[dict[str, Any]]:
        return self.newest(None)

    # -- writes ------------------------------------------------------------------------
    def _writable(self) -> None:
        if self.readonly:
            raise PermissionError("This job store was opened read-only.")

    def _put(self, record: dict[str, Any], old_status: str | None, event: bool = True,
             flush: bool = True) -> None:
        """The one way a record changes: memory now, the journal at the next flush."""
        self._overlay[record["id"]] = record
        self._unflushed[record["id"]] = None
        if old_status != record["status"]:
            if old_status in self._counts:
                self._counts[old_status] -= 1
            if record["status"] in self._counts:
                self._counts[record["status"]] += 1
        if event:
            self._events.add(event_of(record, utc_now()))
        if flush and self.autoflush:
            self.flush()

    def create(self, input_key: str, *, size: int, mtime_ns: int, sha256: str, plugins: Iterable[str],
               duplicate_of: str | None = None) -> dict[str, Any]:
        self._writable()
        job = {
            "id": self._ids.new(),
            "status": PENDING,
            "input": input_key,
            "output": None,
            "plugins": list(plugins),
            "attempts": 0,
            "progress": 0,
            "error": None,
            "size": size,
            "mtime_ns": mtime_ns,
            "sha256": sha256,
            "duplicate_of": duplicate_of,
            "created_at": utc_now(),
            "started_at": None,
            "finished_at": None,
            "rev": 1,
        }
        self.index.note(job)
        self._put(job, None)
        return dict(job)

    def _transition(self, job_id: str, action: str, **fields: Any) -> dict[str, Any]:
        self._writable()
        sources, target = _ALLOWED[action]
        job = self.get(job_id)  # raises JobNotFound for unknown ids
        if job["status"] not in sources:
            raise IllegalTransition(
                f"Job {job_id} is {job['status']}; it cannot {action} "
                f"(only a {' or '.join(sorted(sources))} job can)."
            )
        old = job["status"]
        job.update(fields, status=target, rev=job.get("rev", 0) + 1)
        self._put(job, old, event=action != "resettle")
        return dict(job)

    def claim(self, job_id: str) -> dict[str, Any]:
        job = self.get(job_id)
        return self._transition(
            job_id, "claim", attempts=job["attempts"] + 1, run=job.get("run", 0) + 1, started_at=utc_now(),
            finished_at=None, progress=0, error=None, retry_at=None,
        )

    def complete(self, job_id: str, output_key: str | None) -> dict[str, Any]:
        return self._transition(
            job_id, "complete", output=output_key, progress=100, error=None, finished_at=utc_now()
        )

    def fail(self, job_id: str, error: str, output_key: str | None = None) -> dict[str, Any]:
        return self._transition(job_id, "fail", output=output_key, error=error, finished_at=utc_now())

    def requeue(self, job_id: str, *, count_attempt: bool, retry_at: str | None = None,
                error: str | None = None) -> dict[str, Any]:
        """Running -> pending. A clean stop does not count as an attempt; a crash or a
        transient plugin failure does (then `retry_at` says when to run it again)."""
        job = self.get(job_id)
        attempts = job["attempts"] if count_attempt else max(0, job["attempts"] - 1)
        return self._transition(job_id, "requeue", attempts=attempts, progress=0, started_at=None,
                                retry_at=retry_at, error=error)

    def retry(self, job_id: str) -> dict[str, Any]:
        return self._transition(
            job_id, "retry", attempts=0, progress=0, error=None, output=None,
            started_at=None, finished_at=None, retry_at=None,
        )

    def resettle(self, job_id: str, *, size: int, mtime_ns: int, sha256: str,
                 duplicate_of: str | None) -> dict[str, Any]:
        """The input changed before the job ran: same job, new content facts."""
        job = self._transition(job_id, "resettle", size=size, mtime_ns=mtime_ns, sha256=sha256,
                               duplicate_of=duplicate_of, progress=0)
        self.index.note(job)
        return job

    def set_progress(self, job_id: str, progress: int, plugin: str | None = None) -> None:
        """A running job's progress (and the plugin it is in); not a transition."""
        self._writable()
        record = self._stored(job_id)
        if record is None or record.get("status") != RUNNING:
            return
        changed = {"progress": max(0, min(100, int(progress)))}
        if plugin is not None:
            changed["plugin"] = plugin
        if all(record.get(k) == v for k, v in changed.items()):
            return
        self._put({**record, **changed}, RUNNING, event=False)

    def touch_input(self, job_id: str, mtime_ns: int) -> None:
        """Same content, new mtime (a `touch`): remember it so scans need not re-hash."""
        self._writable()
        record = self._stored(job_id)
        if record is None:
            raise JobNotFound(f"No job has the id {job_id!r}.")
        updated = {**record, "mtime_ns": mtime_ns}
        self.index.note(updated)
        self._put(updated, record["status"], event=False)

    # -- flush and checkpoint ------------------------------------------------------------
    def flush(self) -> bool:
        """Append what changed to the journal (one checksummed record, fsync'd), then the
        events; checkpoint when the journal is long enough. OSError (a full disk): nothing
        of this flush counts, and the next flush tries again with everything."""
        if self.readonly or not (self._unflushed or self._events.dirty):
            return False
        if self._unflushed:
            batch = {"seq": self._seq + 1, "put": [self._overlay[i] for i in self._unflushed],
                     "counts": self._counts, "floor": self._ids.floor}
            path = chunks.jobs_dir(self.state_dir) / self._manifest.journal
            self._journal_size = journal.append(path, batch)
            self._seq += 1
            self._unflushed.clear()
            self._events.mark(self._seq, self._manifest.gen)  # the journal's witness (events.py)
        try:
            self._events.flush()
            _EVENTS_TROUBLE.clear("the event log is written again")
        except OSError as exc:  # history only; kept in memory and tried again next flush
            _EVENTS_TROUBLE.report(f"could not append to the event log ({exc}); will retry")  # once, not per flush
        if self._checkpoint_due():
            try:
                self.checkpoint()
                _CHECKPOINT_TROUBLE.clear("the job store checkpoints again")
            except OSError as exc:
                self._next_checkpoint_try = time.monotonic() + 5.0
                _CHECKPOINT_TROUBLE.report(f"checkpoint of the job store failed ({exc}); the journal "
                                           "keeps every change, will retry")
        return True

    def _checkpoint_due(self) -> bool:
        if time.monotonic() < self._next_checkpoint_try:
            return False
        if self._journal_size >= JOURNAL_LIMIT:
            return True
        if len(self._overlay) < MAX_DIRTY_CHUNKS:
            return False
        touched = {self._manifest.chunk_index(i) for i in self._overlay}
        return len(touched) >= MAX_DIRTY_CHUNKS

    def checkpoint(self) -> None:
        """Fold the journal into new chunk files and commit them with a new manifest.

        Order: chunks, index changes, a new (empty) journal, then the manifest, whose
        atomic replacement is the commit; only then are the files it retired removed.
        A crash or an error before the commit leaves the old manifest, chunks and
        journal untouched (the new files are removed, or found and removed at open)."""
        self._writable()
        if self._unflushed:
            raise RuntimeError("checkpoint() with unflushed changes; call flush()")
        old = self._manifest
        gen = old.gen + 1
        touched: dict[int | None, list[dict[str, Any]]] = {}
        for job_id, record in self._overlay.items():
            touched.setdefault(old.chunk_index(job_id), []).append(record)
        entries = list(old.chunks)
        written: list[str] = []
        retired: list[str] = []
        replaced: dict[int, list[dict[str, Any]]] = {}
        try:
            for index, records in sorted(touched.items(), key=lambda kv: -1 if kv[0] is None else kv[0]):
                merged = dict(self._chunk(index)) if index is not None else {}
                merged.update((r["id"], r) for r in records)
                ordered = sorted(merged.values(), key=lambda r: r["id"])
                pieces = [ordered[i:i + CHUNK_SIZE] for i in range(0, len(ordered), CHUNK_SIZE)]
                if index is not None and len(ordered) <= 2 * CHUNK_SIZE and index + 1 < len(entries):
                    pieces = [ordered]  # an old chunk keeps its range; only the last one splits
                new_entries = []
                for number, piece in enumerate(pieces):
                    min_id = entries[index]["min_id"] if (index is not None and number == 0) else None
                    entry = chunks.write_chunk(self.state_dir, piece, gen, min_id)
                    written.append(entry["name"])
                    new_entries.append(entry)
                if index is not None:
                    retired.append(entries[index]["name"])
                replaced[-1 if index is None else index] = new_entries
            self.index.checkpoint(gen)
            new_journal = chunks.journal_name(gen)
            size = journal.create(chunks.jobs_dir(self.state_dir) / new_journal, gen)
            written.append(new_journal)
            final: list[dict[str, Any]] = list(replaced.get(-1, []))
            for index, entry in enumerate(entries):
                final.extend(replaced.get(index, [entry]))
            final.sort(key=lambda e: e["min_id"])
            manifest = Manifest(gen=gen, seq=self._seq, floor=self._ids.floor, journal=new_journal,
                                chunks=final, retired=retired + [old.journal], counts=dict(self._counts))
            chunks.write_manifest(self.state_dir, manifest)
        except BaseException:
            for name in written:
                _remove(chunks.jobs_dir(self.state_dir) / name)
            raise
        self._manifest = manifest
        self._journal_size = size
        self._overlay = {}
        for name in retired:
            self._cache.pop(name, None)
        for name in manifest.retired:
            _remove(chunks.jobs_dir(self.state_dir) / name)

    # -- retention -------------------------------------------------------------------------
    def prune(self, cutoff: str, dry_run: bool = False) -> list[dict[str, Any]]:
        """Completed/failed records that finished before `cutoff` (ISO UTC), oldest first.

        Returns them (so the caller can remove their outputs); with `dry_run`, only
        says which they would be. Each pruned job leaves a tombstone with its input
        and content facts, so a pruned input still in the inbox is not taken again
        and the index can always be rebuilt from the records.
        """
        def query() -> list[dict[str, Any]]:
            found = []
            for index in range(len(self._manifest.chunks) or 1):
                if self._manifest.chunks:
                    oldest = self._manifest.chunks[index].get("oldest_finish")
                    low, high = self._manifest.bounds(index)
                    in_overlay = any((low is None or i >= low) and (high is None or i < high)
                                     for i in self._overlay)
                    if (oldest is None or oldest >= cutoff) and not in_overlay:
                        continue
                    records = self._partition(index).values()
                else:
                    records = self._overlay.values()
                found.extend(dict(r) for r in records
                             if r.get("status") in FINISHED and (r.get("finished_at") or "") < cutoff)
            return sorted(found, key=lambda r: r["id"])
        removed = self._retrying(query)
        if dry_run:
            return removed
        self._writable()
        for job in removed:
            stub = {k: job.get(k) for k in ("id", "input", "size", "mtime_ns", "sha256", "duplicate_of",
                                            "created_at", "finished_at")}
            stub.update(status=PRUNED, rev=job.get("rev", 0) + 1)
            self._put(stub, job["status"], event=False, flush=False)
        if removed and self.autoflush:
            self.flush()
        return removed


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def public_record(job: dict[str, Any]) -> dict[str, Any]:
    """The contract's job record (internal bookkeeping fields left out)."""
    return {k: v for k, v in job.items() if k not in INTERNAL_FIELDS}
