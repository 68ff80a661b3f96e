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
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from forgesyte.conditions import Condition
from forgesyte.storage import chunks, journal
from forgesyte.storage.chunks import CHUNK_SIZE, PRUNED, Manifest
from forgesyte.storage.errors import StateDamaged
from forgesyte.storage.events import EventLog, event_of
from forgesyte.storage.ids import JobIds, utc_now
from forgesyte.storage.view import (  # noqa: F401 - the store's public names live here too
    COMPLETED, FAILED, FINISHED, PENDING, RUNNING, STATUSES, AmbiguousJob, IllegalTransition, JobNotFound,
    StoreView, _status_counts,
)

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
INTERNAL_FIELDS = ("mtime_ns", "run")
log = logging.getLogger("forgesyte.storage")
# Ongoing write trouble is logged when it starts, as a reminder, and when it clears.
_EVENTS_TROUBLE = Condition("event-log-write", log)
_CHECKPOINT_TROUBLE = Condition("checkpoint-write", log)


class JobStore(StoreView):
    """Job records and their transitions.

    `readonly=True` (the CLI's reads): a snapshot; never writes.
    Otherwise the caller must hold the state lock; opening repairs what a crash
    left behind (recovery.py) or raises StateDamaged. `autoflush` (default on)
    writes after every change; the daemon turns it off and calls `flush()`
    once per loop turn.
    """

    def __init__(self, state_dir: Path | str, readonly: bool = False, autoflush: bool = True):
        self.readonly = readonly
        self.autoflush = autoflush and not readonly
        if readonly:
            super().__init__(state_dir)
            return
        self.state_dir = Path(state_dir)
        self._cache = OrderedDict()
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

    def close(self) -> None:
        if not self.readonly:
            self.flush()

    # -- writer-only reads ---------------------------------------------------------
    def first_with_sha(self, sha256: str) -> dict[str, Any] | None:
        """The earliest non-duplicate job with this content, if its record still exists."""
        job_id = self.index.original(sha256)
        if job_id is None:
            return None
        record = self._stored(job_id)
        if record is None or record.get("status") == PRUNED or record.get("sha256") != sha256:
            return None  # pruned, or resettled to other content since
        return dict(record)

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

    def with_status(self, *statuses: str) -> list[dict[str, Any]]:
        """Jobs in these statuses, oldest first (the writer validates those it will act on)."""
        found = super().with_status(*statuses)
        if not self.readonly and set(statuses) & {PENDING, RUNNING}:
            self._check_work(found)
        return found

    def iter_status(self, *statuses: str) -> Iterator[dict[str, Any]]:
        """Jobs in these statuses, oldest first, one chunk at a time (validated like with_status)."""
        check = not self.readonly and bool(set(statuses) & {PENDING, RUNNING})
        for job in super().iter_status(*statuses):
            if check:
                self._check_work([job])
            yield job

    def _index_entry(self, input_key: str) -> list | None:
        if self.readonly:
            return super()._index_entry(input_key)
        return self.index.entry(input_key)

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
            try:
                self._journal_size = journal.append(path, batch)
            except FileNotFoundError:  # deleted under a running writer: not a full disk to wait out
                raise StateDamaged(chunks.rel(self._manifest.journal), "disappeared while it was "
                                   "being written to") from None
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
