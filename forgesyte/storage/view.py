"""Reading the job store: a snapshot of the manifest and the journal, chunks on demand.

`StoreView` answers every query (by id, input, prefix, status, newest first)
from one consistent snapshot: the manifest, the journal that continues it,
and the chunks a query needs (the last few are cached). JobStore (jobs.py)
is a StoreView that can also write; a CLI command uses a read-only JobStore.
A writer may replace a chunk or the journal under a reader (a checkpoint):
the reader then takes a fresh snapshot and asks again (`_retrying`).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from forgesyte.storage import chunks
from forgesyte.storage.chunks import PRUNED, Manifest
from forgesyte.storage.errors import StateDamaged
from forgesyte.storage.ids import is_job_id
from forgesyte.storage.index import IndexDamaged, lookup_input

PENDING, RUNNING, COMPLETED, FAILED = "pending", "running", "completed", "failed"
STATUSES = (PENDING, RUNNING, COMPLETED, FAILED)
FINISHED = (COMPLETED, FAILED)
CACHE_CHUNKS = 8
T = TypeVar("T")
log = logging.getLogger("forgesyte.storage")


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


class StoreView:
    """Every query of the store, over a snapshot (`_manifest`, `_overlay` = the journal's
    records, `_counts`). Subclasses set `readonly`; a read-only view re-snapshots on demand."""

    state_dir: Path
    readonly: bool = True
    _manifest: Manifest
    _overlay: dict[str, dict[str, Any]]
    _counts: dict[str, int]

    def __init__(self, state_dir: Path | str):
        self.state_dir = Path(state_dir)
        self._cache: OrderedDict[str, dict[str, dict[str, Any]]] = OrderedDict()
        self._load_snapshot()

    # -- snapshots -------------------------------------------------------
    def _load_snapshot(self) -> None:
        from forgesyte.storage.snapshot import read_snapshot

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
        entry = self._index_entry(input_key)
        if entry is None:
            return None
        return {"id": entry[0], "size": entry[1], "mtime_ns": entry[2], "sha256": entry[3]}

    def _index_entry(self, input_key: str) -> list | None:
        """A reader looks the input up in the index files, with the journal on top."""
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

    def with_status(self, *statuses: str) -> list[dict[str, Any]]:
        """Jobs in these statuses, oldest first."""
        wanted = set(statuses)

        def query() -> list[dict[str, Any]]:
            return [dict(r) for part in self._partitions(False, wanted) for r in part
                    if r.get("status") in wanted]
        return self._retrying(query)

    def iter_status(self, *statuses: str) -> Iterator[dict[str, Any]]:
        """with_status() one chunk at a time: the daemon's recovery walks 100,000 pending
        jobs without holding a copy of them all. (A writer's view: its files do not change
        under it, so no snapshot retry is needed.)"""
        wanted = set(statuses)
        for part in self._partitions(False, wanted):
            for record in part:
                if record.get("status") in wanted:
                    yield dict(record)

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

