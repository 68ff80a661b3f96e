"""The job store: job records in TinyDB, and every status transition in one place.

Lifecycle (the only legal moves, enforced by `_transition`):

    pending --claim--> running --complete--> completed
                         |  \\--fail-------> failed --retry--> pending
                         \\--requeue--> pending    (clean stop or crash recovery)
    pending --fail--> failed                       (input vanished, original failed)
    pending --complete--> completed                (duplicate reusing a result)

Layout (docs/storage.md has the reasoning):

    <state>/jobs.json     the active TinyDB: pending and running jobs, the last
                          few hundred finished ones, and the generation number
    <state>/archive/      finished jobs sealed into immutable segments + manifest
    <state>/index/        input key -> newest archived job; sha256 -> original

Every write replaces a whole file atomically, and the active file is bounded,
so the cost per job does not grow with the history. The writer (the daemon,
or a CLI command holding the state lock) batches: transitions change memory
and reach the disk on `flush()`. Readers open a snapshot of the active file
and load only the segments a query needs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from forgesyte.storage.archive import SEGMENT_SIZE, Archive, visible
from forgesyte.storage.ids import JobIds, utc_now
from forgesyte.storage.index import Index, lookup_input
from forgesyte.storage.tinystore import open_tinydb

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

DB_NAME = "jobs.json"
T = TypeVar("T")


class JobNotFound(LookupError):
    pass


class AmbiguousJob(LookupError):
    pass


class IllegalTransition(ValueError):
    pass


class JobStore:
    """Job records and their transitions.

    `readonly=True` (the CLI's reads): a snapshot; never writes.
    Otherwise the caller must hold the state lock. `autoflush` (default on)
    writes after every change; the daemon turns it off and calls `flush()`
    once per loop turn.
    """

    def __init__(self, state_dir: Path | str, readonly: bool = False, autoflush: bool = True):
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / DB_NAME
        self.readonly = readonly
        self.autoflush = autoflush and not readonly
        self.archive = Archive(self.state_dir)
        self._ids = JobIds()
        self._segment_cache: dict[str, list[dict[str, Any]]] = {}
        self._obsolete: list[str] = []  # replaced segment files, removed after the next flush
        self._manifest_dirty = False
        self._open()
        if not readonly:
            self._recover_archive()
            self.index = Index(self.state_dir)
            self._active_sha: dict[str, str] = {}
            for doc in self._jobs.all():
                self._remember_sha(doc)

    def _open(self) -> None:
        self._db, self._snapshot = open_tinydb(self.path, readonly=self.readonly)
        self._jobs = self._db.table("jobs", cache_size=0)
        self._meta = self._db.table("meta", cache_size=0)
        meta = self._meta.all()
        self._gen: int = meta[0]["gen"] if meta else 0
        self._all_entries = self.archive.read_manifest()
        self._entries = [e for e in self._all_entries if visible(e, self._gen)]
        self._by_id: dict[str, int] = {}
        self._active_latest: dict[str, str] = {}
        for doc in self._jobs.all():
            self._index_active(doc.doc_id, doc)

    def _index_active(self, doc_id: int, job: dict[str, Any]) -> None:
        self._by_id[job["id"]] = doc_id
        latest = self._active_latest.get(job["input"])
        if latest is None or latest < job["id"]:
            self._active_latest[job["input"]] = job["id"]

    def _remember_sha(self, job: dict[str, Any]) -> None:
        if job.get("sha256") and not job.get("duplicate_of"):
            first = self._active_sha.get(job["sha256"])
            if first is None or job["id"] < first:
                self._active_sha[job["sha256"]] = job["id"]

    def _recover_archive(self) -> None:
        """Writer at open: undo what a crash left half-done, so every entry is plain again.

        Entries newer than the active file's generation belong to a flush whose
        active write never happened (their jobs are still active): drop them.
        Retirements newer than it did not happen either: undo them. Retired
        entries older than it are garbage, as are files no entry names.
        """
        keep, changed = [], False
        for entry in self._all_entries:
            if entry["gen"] > self._gen:
                self.archive.remove_segment(entry["name"])
                changed = True
                continue
            if entry.get("retired") is not None:
                if entry["retired"] > self._gen:
                    entry["retired"] = None
                else:
                    self.archive.remove_segment(entry["name"])
                    changed = True
                    continue
                changed = True
            keep.append(entry)
        for name in self.archive.segment_names_on_disk() - {e["name"] for e in keep}:
            self.archive.remove_segment(name)
        if changed:
            self.archive.write_manifest(keep)
        self._all_entries = keep
        self._entries = list(keep)

    def reload(self) -> None:
        """Readers: take a fresh snapshot (e.g. a segment was replaced under us)."""
        self._segment_cache.clear()
        self._open()

    def close(self) -> None:
        if not self.readonly:
            self.flush()
        self._db.close()

    # -- reading segments -----------------------------------------------------
    def _manifest(self) -> list[dict[str, Any]]:
        return list(self._entries)

    def _segment(self, name: str) -> list[dict[str, Any]]:
        jobs = self._segment_cache.get(name)
        if jobs is None:
            jobs = self.archive.read_segment(name)
            if len(self._segment_cache) > 16:
                self._segment_cache.clear()
            self._segment_cache[name] = jobs
        return jobs

    def _retrying(self, query: Callable[[], T]) -> T:
        """A reader's snapshot may name a segment the writer has just replaced: re-snapshot."""
        for _ in range(5):
            try:
                return query()
            except FileNotFoundError:
                if not self.readonly:
                    raise
                time.sleep(0.02)
                self.reload()
        return query()

    def _archived(self, job_id: str) -> dict[str, Any] | None:
        def find():
            for entry in self._manifest():
                if entry["min_id"] <= job_id <= entry["max_id"]:
                    for job in self._segment(entry["name"]):
                        if job["id"] == job_id:
                            return dict(job)
            return None
        return self._retrying(find)

    # -- reads -------------------------------------------------------------
    def get(self, job_id: str) -> dict[str, Any]:
        doc_id = self._by_id.get(job_id)
        if doc_id is not None:
            return dict(self._jobs.get(doc_id=doc_id))
        job = self._archived(job_id)
        if job is None:
            raise JobNotFound(f"No job has the id {job_id!r}.")
        return job

    def is_active(self, job_id: str) -> bool:
        return job_id in self._by_id

    def status_of(self, job_id: str) -> str:
        return self.get(job_id)["status"]

    def _archived_entry(self, input_key: str) -> list | None:
        """The index entry: in memory for the writer, one small bucket file for readers."""
        if self.readonly:
            return lookup_input(self.state_dir, input_key)
        return self.index.entry(input_key)

    def resolve(self, ref: str) -> dict[str, Any]:
        """A job by id, unique id prefix, or input key (newest job for that input)."""
        if not ref:
            raise JobNotFound("No job matches an empty reference.")
        if ref in self._by_id:
            return self.get(ref)
        archived = self._archived(ref) if len(ref) == 16 else None
        if archived is not None:
            return archived
        latest = self.latest_for_input(ref)
        if latest is not None:
            newest = latest["id"]
            try:
                return self.get(newest)
            except JobNotFound:
                raise JobNotFound(f"The newest job for {ref!r} ({newest}) was pruned.") from None
        matches = self._retrying(lambda: self._prefix_matches(ref))
        if len(matches) == 1:
            return self.get(matches[0])
        if len(matches) > 1:
            raise AmbiguousJob(f"{ref!r} matches {len(matches)} jobs; give more of the id.")
        raise JobNotFound(f"No job matches {ref!r} (by id, id prefix or input path).")

    def _prefix_matches(self, prefix: str) -> list[str]:
        matches = {job_id for job_id in self._by_id if job_id.startswith(prefix)}
        upper = prefix + "~"  # '~' sorts after every id character
        for entry in self._manifest():
            if entry["max_id"] >= prefix and entry["min_id"] <= upper:
                matches.update(j["id"] for j in self._segment(entry["name"]) if j["id"].startswith(prefix))
        return sorted(matches)

    def latest_for_input(self, input_key: str) -> dict[str, Any] | None:
        """Facts of the newest job for this input: id, size, mtime_ns, sha256."""
        active_id = self._active_latest.get(input_key)
        entry = self._archived_entry(input_key)
        if active_id and (not entry or active_id > entry[0]):
            job = self.get(active_id)
            return {"id": job["id"], "size": job["size"], "mtime_ns": job.get("mtime_ns", 0),
                    "sha256": job["sha256"]}
        if entry:
            return {"id": entry[0], "size": entry[1], "mtime_ns": entry[2], "sha256": entry[3]}
        return None

    def first_with_sha(self, sha256: str) -> dict[str, Any] | None:
        """The earliest non-duplicate job with this content, if its record still exists."""
        candidates = [i for i in (self._active_sha.get(sha256), self.index.original(sha256)) if i]
        for job_id in sorted(candidates):
            try:
                return self.get(job_id)
            except JobNotFound:
                continue
        return None

    def with_status(self, *statuses: str) -> list[dict[str, Any]]:
        """Active jobs in these statuses (pending/running live only there), oldest first."""
        wanted = set(statuses)
        jobs = [dict(doc) for doc in self._jobs.all() if doc["status"] in wanted]
        jobs.sort(key=lambda job: job["id"])
        return jobs

    def counts(self) -> dict[str, int]:
        counts = {status: 0 for status in STATUSES}
        for doc in self._jobs.all():
            counts[doc["status"]] += 1
        for entry in self._entries:
            for status, n in entry["counts"].items():
                counts[status] += n
        return counts

    def newest(self, limit: int | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """Newest first, reading only as many segments as needed."""
        def query():
            found = [dict(d) for d in self._jobs.all() if status is None or d["status"] == status]
            if status in (PENDING, RUNNING):
                found.sort(key=lambda j: j["id"], reverse=True)
                return found if limit is None else found[:limit]
            segments = sorted(self._manifest(), key=lambda e: e["max_id"], reverse=True)
            for entry in segments:
                if limit is not None:
                    found.sort(key=lambda j: j["id"], reverse=True)
                    if len(found) >= limit and found[limit - 1]["id"] > entry["max_id"]:
                        break
                found.extend(j for j in self._segment(entry["name"]) if status is None or j["status"] == status)
            found.sort(key=lambda j: j["id"], reverse=True)
            return found if limit is None else found[:limit]
        return self._retrying(query)

    def all(self) -> list[dict[str, Any]]:
        return self.newest(None)

    # -- writes ------------------------------------------------------------
    def _changed(self) -> None:
        if self.autoflush:
            self.flush()

    def create(
        self,
        input_key: str,
        *,
        size: int,
        mtime_ns: int,
        sha256: str,
        plugins: Iterable[str],
        duplicate_of: str | None = None,
    ) -> dict[str, Any]:
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
        }
        doc_id = self._jobs.insert(job)
        self._index_active(doc_id, job)
        self._remember_sha(job)
        self._changed()
        return job

    def _transition(self, job_id: str, action: str, **fields: Any) -> dict[str, Any]:
        sources, target = _ALLOWED[action]
        if job_id not in self._by_id:
            if action == "retry":
                self._unarchive(job_id)
            else:
                job = self.get(job_id)  # raises JobNotFound for unknown ids
                raise IllegalTransition(f"Job {job_id} is {job['status']}; it cannot {action}.")
        job = self.get(job_id)
        if job["status"] not in sources:
            raise IllegalTransition(
                f"Job {job_id} is {job['status']}; it cannot {action} "
                f"(only a {' or '.join(sorted(sources))} job can)."
            )
        fields["status"] = target
        self._jobs.update(fields, doc_ids=[self._by_id[job_id]])
        job.update(fields)
        self._changed()
        return job

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

    def resettle(
        self, job_id: str, *, size: int, mtime_ns: int, sha256: str, duplicate_of: str | None
    ) -> dict[str, Any]:
        """The input changed before the job ran: same job, new content facts."""
        job = self._transition(
            job_id, "resettle", size=size, mtime_ns=mtime_ns, sha256=sha256,
            duplicate_of=duplicate_of, progress=0,
        )
        self._remember_sha(job)
        return job

    def set_progress(self, job_id: str, progress: int) -> None:
        doc_id = self._by_id.get(job_id)
        if doc_id is not None:
            self._jobs.update({"progress": max(0, min(100, int(progress)))}, doc_ids=[doc_id])
            self._changed()

    def touch_input(self, job_id: str, mtime_ns: int) -> None:
        """Same content, new mtime (a `touch`): remember it so scans need not re-hash."""
        doc_id = self._by_id.get(job_id)
        if doc_id is not None:
            self._jobs.update({"mtime_ns": mtime_ns}, doc_ids=[doc_id])
        else:
            self.index.touch(self.get(job_id)["input"], job_id, mtime_ns)
        self._changed()

    # -- moving jobs between active and archive ----------------------------
    def _unarchive(self, job_id: str) -> None:
        """Bring an archived job back into the active file (for retry)."""
        job = self._archived(job_id)
        if job is None:
            raise JobNotFound(f"No job has the id {job_id!r}.")
        for entry in self._manifest():
            if entry["min_id"] <= job_id <= entry["max_id"]:
                jobs = self._segment(entry["name"])
                if any(j["id"] == job_id for j in jobs):
                    self._replace_segment(entry, [j for j in jobs if j["id"] != job_id])
                    break
        doc_id = self._jobs.insert(job)
        self._index_active(doc_id, job)

    def _replace_segment(self, entry: dict[str, Any], keep: list[dict[str, Any]]) -> None:
        """New file for the kept jobs (or none); the old one is retired at the next
        generation and its file removed after the flush that makes it invisible."""
        next_gen = self._gen + 1
        for candidate in self._all_entries:
            if candidate["name"] == entry["name"]:
                candidate["retired"] = next_gen
        self._entries = [e for e in self._entries if e["name"] != entry["name"]]
        if keep:
            new = self.archive.write_segment(keep, next_gen)
            self._all_entries.append(new)
            self._entries.append(new)
        self._segment_cache.pop(entry["name"], None)
        self._obsolete.append(entry["name"])
        self._manifest_dirty = True

    def _seal(self) -> None:
        finished = sorted((d for d in self._jobs.all() if d["status"] in FINISHED), key=lambda d: d["id"])
        while len(finished) >= SEGMENT_SIZE:
            batch, finished = finished[:SEGMENT_SIZE], finished[SEGMENT_SIZE:]
            jobs = [dict(d) for d in batch]
            entry = self.archive.write_segment(jobs, self._gen + 1)
            for job in jobs:
                self.index.record(job)
            self._jobs.remove(doc_ids=[d.doc_id for d in batch])
            self._forget_active(jobs)
            self._all_entries.append(entry)
            self._entries.append(entry)
            self._manifest_dirty = True

    def _forget_active(self, jobs: list[dict[str, Any]]) -> None:
        for job in jobs:
            del self._by_id[job["id"]]
            if self._active_latest.get(job["input"]) == job["id"]:
                del self._active_latest[job["input"]]
            if self._active_sha.get(job.get("sha256")) == job["id"]:
                del self._active_sha[job["sha256"]]

    def flush(self) -> bool:
        """Write what changed, in the order that keeps every reader's snapshot whole:
        new segments and index records, then the manifest, then the active file
        (whose generation makes them visible), then remove retired files."""
        if self.readonly or not (self._snapshot.dirty or self._manifest_dirty or self.index.dirty):
            return False
        self._seal()
        self.index.flush()
        manifest_changed = self._manifest_dirty
        if manifest_changed:
            self._gen += 1
            self.archive.write_manifest(self._all_entries)
            if self._meta.all():
                self._meta.update({"gen": self._gen})
            else:
                self._meta.insert({"gen": self._gen})
            self._manifest_dirty = False
        self._snapshot.flush()
        if manifest_changed:
            for name in self._obsolete:
                self.archive.remove_segment(name)
            self._obsolete.clear()
            self._all_entries = [e for e in self._all_entries if e.get("retired") is None]
        return True

    # -- retention -----------------------------------------------------------
    def prune(self, cutoff: str) -> list[dict[str, Any]]:
        """Remove completed/failed records that finished before `cutoff` (ISO UTC).

        Returns the removed records (so the caller can remove their outputs).
        The input index keeps its facts, so a pruned input still in the inbox
        is not taken again.
        """
        removed: list[dict[str, Any]] = []
        old_active = [d for d in self._jobs.all()
                      if d["status"] in FINISHED and (d["finished_at"] or "") < cutoff]
        removed.extend(dict(d) for d in old_active)
        if old_active:
            for d in old_active:
                self.index.record(dict(d))  # the index remembers the input, so it is not taken again
            self._jobs.remove(doc_ids=[d.doc_id for d in old_active])
            self._forget_active([dict(d) for d in old_active])
        for entry in self._manifest():
            if entry["oldest_finish"] >= cutoff:
                continue
            jobs = self._segment(entry["name"])
            keep = [j for j in jobs if (j["finished_at"] or "") >= cutoff]
            if len(keep) != len(jobs):
                removed.extend(j for j in jobs if (j["finished_at"] or "") < cutoff)
                self._replace_segment(entry, keep)
        self._changed()
        return removed


def public_record(job: dict[str, Any]) -> dict[str, Any]:
    """The contract's job record (internal bookkeeping fields left out)."""
    return {k: v for k, v in job.items() if k not in ("mtime_ns", "run")}

