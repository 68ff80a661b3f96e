"""Near-duplicate videos: the fingerprint index and the distance behind `forgesyte similar`.

The `fingerprint` plugin gives each job a row of 64-bit perceptual hashes,
one per sampled second (flat frames left out). Two videos are compared by,
for each hash of one, the nearest hash of the other (Hamming distance, in
bits), and the median of those: a re-encoded or resized copy stays within a
few bits, a copy trimmed at the start still finds every one of its frames in
the original (hence the median over the shorter side, and the better of the
two directions), and an unrelated video is about 20-32 bits away.

The index keeps every finished job's hashes in one file, so `similar` reads
one file instead of every results document. Its format, verification and
rebuild are storage's (storage/fingerprints.py, and recovery.rebuild_fingerprints:
a file that does not verify, or is another version's, goes to quarantine/ and
is written again from the results documents, at the daemon's start, at the
first append, or by `fsck --repair`). Here: the daemon's appends and the
comparing. Readers never write; over a damaged index they read the results
documents.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from forgesyte.storage import fingerprints
from forgesyte.storage.fingerprints import (  # noqa: F401  (FORMAT: for callers of this module)
    FORMAT, PLUGIN, IndexDamaged, entries_from_results, index_path, read_index,
)

log = logging.getLogger("forgesyte.similar")

DEFAULT_MAX_DISTANCE = 10.0
MAX_HASHES = 4000  # longer rows are thinned evenly before comparing (cost is rows x rows)


# -- writing (the daemon) ----------------------------------------------------------------

class IndexWriter:
    """The daemon's side: verified (or rebuilt) once, then one append per finished job."""

    def __init__(self, state_dir: Path | str, store, results):
        self.state_dir = Path(state_dir)
        self.store = store
        self.results = results
        self._ready = False

    def _prepare(self) -> set[str]:
        """Verify the index (rebuild it if it is missing or does not verify, the damaged
        file moved to quarantine/ first); the job ids it holds."""
        from forgesyte.storage.recovery import rebuild_fingerprints

        try:
            entries = read_index(self.state_dir)
        except IndexDamaged as exc:
            missing = not os.path.lexists(index_path(self.state_dir))
            rebuild_fingerprints(self.state_dir, self.store.iter_status("completed"), self.results,
                                 None if missing else exc.problem)
            entries = read_index(self.state_dir)
        self._ready = True
        return {e["job_id"] for e in entries}

    def job_finished(self, job: dict[str, Any]) -> None:
        """Add a completed job that ran `fingerprint` (reads its results document once)."""
        if job.get("status") != "completed" or PLUGIN not in (job.get("plugins") or []):
            return
        if not self._ready and job["id"] in self._prepare():
            return  # the rebuild already read it
        fingerprints.append(self.state_dir, entries_from_results([job], self.results))


# -- comparing ---------------------------------------------------------------------------

_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(values: np.ndarray) -> np.ndarray:
    counter = getattr(np, "bitwise_count", None)
    if counter is not None:
        return counter(values)
    return _BYTE_BITS[values.view(np.uint8)].reshape(*values.shape, 8).sum(axis=-1)


def as_array(hashes: list[str]) -> np.ndarray:
    values = np.array([int(h, 16) for h in hashes], dtype=np.uint64)
    if len(values) > MAX_HASHES:
        values = values[np.linspace(0, len(values) - 1, MAX_HASHES).astype(int)]
    return values


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Median nearest-hash distance in bits, in the better direction (0 = same pictures)."""
    if not len(a) or not len(b):
        return float("inf")
    bits = _popcount(a[:, None] ^ b[None, :])
    return float(min(np.median(bits.min(axis=1)), np.median(bits.min(axis=0))))


def nearest(query: dict[str, Any], entries: Iterable[dict[str, Any]], max_distance: float,
            alive: set[str] | None = None) -> list[dict[str, Any]]:
    """Entries within max_distance of the query, nearest first (the query's own job left out;
    with `alive`, only jobs still in the store)."""
    mine = as_array(query["hashes"])
    found: dict[str, dict[str, Any]] = {}
    for entry in entries:
        job_id = entry["job_id"]
        if job_id == query["job_id"] or (alive is not None and job_id not in alive):
            continue
        d = distance(mine, as_array(entry["hashes"]))
        if d <= max_distance and (job_id not in found or d < found[job_id]["distance"]):
            found[job_id] = {"id": job_id, "input": entry["input"], "distance": round(d, 2)}
    return sorted(found.values(), key=lambda e: (e["distance"], e["id"]))


_writers: dict[tuple[str, int], IndexWriter] = {}


def job_completed(state_dir: Path | str, store, results, job: dict[str, Any]) -> None:
    """The daemon's hook (Scheduler.finish): keep the index in step; never fails the job."""
    key = (str(state_dir), id(store))
    writer = _writers.get(key)
    if writer is None:
        writer = _writers[key] = IndexWriter(state_dir, store, results)
    try:
        writer.job_finished(job)
    except Exception as exc:  # a full disk, a damaged document: `similar` falls back, the job stands
        log.warning("fingerprint index not updated for job %s: %s", job.get("id"), exc)
