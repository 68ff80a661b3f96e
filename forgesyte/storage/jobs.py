"""The job store: job records in TinyDB, and every status transition in one place.

Lifecycle (the only legal moves, enforced by `_transition`):

    pending --claim--> running --complete--> completed
                         |  \\--fail-------> failed --retry--> pending
                         \\--requeue--> pending    (clean stop or crash recovery)
    pending --fail--> failed                       (input vanished, original failed)
    pending --complete--> completed                (duplicate reusing a result)
    completed/failed --update_input--> (a new job is made instead; records are history)

Records hold only relative keys (`input` under the inbox, `output` under the
output root). The daemon is the single writer; the CLI opens the store
read-only and sees either the previous or the next whole file (atomic replace).
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from tinydb import TinyDB

from forgesyte.storage.tinystore import open_tinydb

PENDING, RUNNING, COMPLETED, FAILED = "pending", "running", "completed", "failed"
STATUSES = (PENDING, RUNNING, COMPLETED, FAILED)

_ALLOWED = {
    "claim": ({PENDING}, RUNNING),
    "complete": ({RUNNING, PENDING}, COMPLETED),
    "fail": ({RUNNING, PENDING}, FAILED),
    "requeue": ({RUNNING}, PENDING),
    "retry": ({FAILED}, PENDING),
    "resettle": ({PENDING, RUNNING}, PENDING),
}

DB_NAME = "jobs.json"


class JobNotFound(LookupError):
    pass


class AmbiguousJob(LookupError):
    pass


class IllegalTransition(ValueError):
    pass


def utc_now() -> str:
    """ISO 8601 UTC with millisecond precision, e.g. 2026-11-25T03:09:23.123Z."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"  # ASCII-sorted, so ids sort by time


class JobIds:
    """ULID-style ids: 10 chars of milliseconds + 6 random chars, monotonic per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_rand = 0

    @staticmethod
    def _encode(value: int, width: int) -> str:
        out = []
        for _ in range(width):
            value, digit = divmod(value, 32)
            out.append(_CROCKFORD[digit])
        return "".join(reversed(out))

    def new(self) -> str:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms <= self._last_ms:
                ms = self._last_ms
                rand = self._last_rand + 1
            else:
                rand = secrets.randbits(29)  # leaves room to count up within one ms
            self._last_ms, self._last_rand = ms, rand
            return self._encode(ms, 10) + self._encode(rand, 6)


class JobStore:
    """Job records and their transitions.

    Opened writable only by the process that holds the state lock (the
    daemon, or a CLI command when no daemon runs). In-memory indexes make
    the daemon's lookups O(1); they are rebuilt from the file at open.
    """

    def __init__(self, state_dir: Path | str, readonly: bool = False):
        self.path = Path(state_dir) / DB_NAME
        self.readonly = readonly
        self._db: TinyDB = open_tinydb(self.path, readonly=readonly)
        self._table = self._db.table("jobs")
        self._ids = JobIds()
        self._by_id: dict[str, int] = {}
        self._latest_by_input: dict[str, str] = {}
        self._first_by_sha: dict[str, str] = {}
        for doc in self._table.all():
            self._index(doc.doc_id, doc)

    # -- indexes -----------------------------------------------------------
    def _index(self, doc_id: int, job: dict[str, Any]) -> None:
        self._by_id[job["id"]] = doc_id
        latest = self._latest_by_input.get(job["input"])
        if latest is None or latest < job["id"]:
            self._latest_by_input[job["input"]] = job["id"]
        sha = job.get("sha256")
        if sha and not job.get("duplicate_of"):
            first = self._first_by_sha.get(sha)
            if first is None or job["id"] < first:
                self._first_by_sha[sha] = job["id"]

    def close(self) -> None:
        self._db.close()

    # -- reads -------------------------------------------------------------
    def get(self, job_id: str) -> dict[str, Any]:
        doc_id = self._by_id.get(job_id)
        if doc_id is None:
            raise JobNotFound(f"No job has the id {job_id!r}.")
        return dict(self._table.get(doc_id=doc_id))

    def all(self) -> list[dict[str, Any]]:
        return [dict(doc) for doc in self._table.all()]

    def resolve(self, ref: str) -> dict[str, Any]:
        """A job by id, unique id prefix, or input key (newest job for that input)."""
        if ref in self._by_id:
            return self.get(ref)
        if ref in self._latest_by_input:
            return self.get(self._latest_by_input[ref])
        matches = [job_id for job_id in self._by_id if job_id.startswith(ref)] if ref else []
        if len(matches) == 1:
            return self.get(matches[0])
        if len(matches) > 1:
            raise AmbiguousJob(f"{ref!r} matches {len(matches)} jobs; give more of the id.")
        raise JobNotFound(f"No job matches {ref!r} (by id, id prefix or input path).")

    def latest_for_input(self, input_key: str) -> dict[str, Any] | None:
        job_id = self._latest_by_input.get(input_key)
        return self.get(job_id) if job_id else None

    def first_with_sha(self, sha256: str) -> dict[str, Any] | None:
        job_id = self._first_by_sha.get(sha256)
        return self.get(job_id) if job_id else None

    def with_status(self, *statuses: str) -> list[dict[str, Any]]:
        """Jobs in these statuses, oldest first."""
        wanted = set(statuses)
        jobs = [dict(doc) for doc in self._table.all() if doc["status"] in wanted]
        jobs.sort(key=lambda job: job["id"])
        return jobs

    def counts(self) -> dict[str, int]:
        counts = {status: 0 for status in STATUSES}
        for doc in self._table.all():
            counts[doc["status"]] = counts.get(doc["status"], 0) + 1
        return counts

    def newest(self, limit: int | None = None, status: str | None = None) -> list[dict[str, Any]]:
        jobs = [dict(doc) for doc in self._table.all() if status is None or doc["status"] == status]
        jobs.sort(key=lambda job: job["id"], reverse=True)
        return jobs if limit is None else jobs[:limit]

    # -- writes ------------------------------------------------------------
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
        doc_id = self._table.insert(job)
        self._index(doc_id, job)
        return job

    def _transition(self, job_id: str, action: str, **fields: Any) -> dict[str, Any]:
        sources, target = _ALLOWED[action]
        job = self.get(job_id)
        if job["status"] not in sources:
            raise IllegalTransition(
                f"Job {job_id} is {job['status']}; it cannot {action} "
                f"(only a {' or '.join(sorted(sources))} job can)."
            )
        fields["status"] = target
        self._table.update(fields, doc_ids=[self._by_id[job_id]])
        job.update(fields)
        return job

    def claim(self, job_id: str) -> dict[str, Any]:
        job = self.get(job_id)
        return self._transition(
            job_id, "claim", attempts=job["attempts"] + 1, started_at=utc_now(),
            finished_at=None, progress=0, error=None,
        )

    def complete(self, job_id: str, output_key: str) -> dict[str, Any]:
        return self._transition(
            job_id, "complete", output=output_key, progress=100, error=None, finished_at=utc_now()
        )

    def fail(self, job_id: str, error: str, output_key: str | None = None) -> dict[str, Any]:
        return self._transition(job_id, "fail", output=output_key, error=error, finished_at=utc_now())

    def requeue(self, job_id: str, *, count_attempt: bool) -> dict[str, Any]:
        """Running -> pending. A clean stop does not count as an attempt; a crash does."""
        job = self.get(job_id)
        attempts = job["attempts"] if count_attempt else max(0, job["attempts"] - 1)
        return self._transition(job_id, "requeue", attempts=attempts, progress=0, started_at=None)

    def retry(self, job_id: str) -> dict[str, Any]:
        return self._transition(
            job_id, "retry", attempts=0, progress=0, error=None, output=None,
            started_at=None, finished_at=None,
        )

    def resettle(
        self, job_id: str, *, size: int, mtime_ns: int, sha256: str, duplicate_of: str | None
    ) -> dict[str, Any]:
        """The input changed before the job ran: same job, new content facts."""
        job = self._transition(
            job_id, "resettle", size=size, mtime_ns=mtime_ns, sha256=sha256,
            duplicate_of=duplicate_of, progress=0,
        )
        self._index(self._by_id[job_id], job)
        return job

    def set_progress(self, job_id: str, progress: int) -> None:
        doc_id = self._by_id[job_id]
        self._table.update({"progress": max(0, min(100, int(progress)))}, doc_ids=[doc_id])

    def touch_input(self, job_id: str, mtime_ns: int) -> None:
        """Same content, new mtime (a `touch`): remember it so scans need not re-hash."""
        self._table.update({"mtime_ns": mtime_ns}, doc_ids=[self._by_id[job_id]])


def public_record(job: dict[str, Any]) -> dict[str, Any]:
    """The contract's job record (internal bookkeeping fields left out)."""
    return {k: v for k, v in job.items() if k != "mtime_ns"}


def iter_records(jobs: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for job in jobs:
        yield public_record(job)


def state_file(state_dir: Path | str) -> Path:
    return Path(state_dir) / DB_NAME


def store_exists(state_dir: Path | str) -> bool:
    return os.path.exists(state_file(state_dir))
