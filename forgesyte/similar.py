"""Near-duplicate videos: the fingerprint index and the distance behind `forgesyte similar`.

The `fingerprint` plugin gives each job a row of 64-bit perceptual hashes,
one per sampled second (flat frames left out). Two videos are compared by,
for each hash of one, the nearest hash of the other (Hamming distance, in
bits), and the median of those: a re-encoded or resized copy stays within a
few bits, a copy trimmed at the start still finds every one of its frames in
the original (hence the median over the shorter side, and the better of the
two directions), and an unrelated video is about 20-32 bits away.

The index keeps every finished job's hashes in one file, so `similar` reads
one file instead of every results document:

    <state>/similar/fingerprints.log   checksummed records (storage/recordlog.py):
        {"format": "forgesyte-fingerprints", "version": 1}      header
        {"job_id", "input", "interval_s", "hashes": [hex, ...]} one per job

It is derived data: the daemon (the only writer of state/) appends a record
when a job that ran `fingerprint` completes, and rebuilds the whole file from
the results documents when it is missing, damaged or of another version.
Readers never write; over a damaged index they read the results documents.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from forgesyte.storage import recordlog
from forgesyte.storage.atomic import atomic_write_bytes

log = logging.getLogger("forgesyte.similar")

INDEX_DIR = "similar"
INDEX_FILE = "fingerprints.log"
FORMAT = "forgesyte-fingerprints"
VERSION = 1
PLUGIN = "fingerprint"
DEFAULT_MAX_DISTANCE = 10.0
MAX_HASHES = 4000  # longer rows are thinned evenly before comparing (cost is rows x rows)


class IndexDamaged(Exception):
    """The index does not verify; one sentence naming the file."""


def index_path(state_dir: Path | str) -> Path:
    return Path(state_dir) / INDEX_DIR / INDEX_FILE


def entry_of(job: dict[str, Any], section: dict[str, Any]) -> dict[str, Any] | None:
    """An index record for a job from its fingerprint section (None if it has no hashes)."""
    hashes = section.get("hashes") if isinstance(section, dict) else None
    if not isinstance(hashes, list) or not hashes:
        return None
    return {"job_id": job["id"], "input": job["input"], "interval_s": section.get("interval_s"),
            "hashes": [str(h) for h in hashes]}


# -- reading -------------------------------------------------------------------------

def read_index(state_dir: Path | str) -> list[dict[str, Any]]:
    """Every record of the index; IndexDamaged when it is missing, torn, garbled or unknown."""
    path = index_path(state_dir)
    if not path.exists():
        raise IndexDamaged(f"The fingerprint index {path} does not exist yet.")
    records, good_end, size = recordlog.read(path)
    if good_end != size:
        raise IndexDamaged(f"The fingerprint index {path} is damaged at byte {good_end}.")
    if not records or records[0].get("format") != FORMAT:
        raise IndexDamaged(f"The fingerprint index {path} has no valid header.")
    if records[0].get("version") != VERSION:
        raise IndexDamaged(f"The fingerprint index {path} has version {records[0].get('version')!r}, "
                           f"not {VERSION}.")
    return [r for r in records[1:] if isinstance(r.get("hashes"), list) and "job_id" in r]


def entries_from_results(jobs: Iterable[dict[str, Any]], results) -> list[dict[str, Any]]:
    """Index records rebuilt from the results documents of these (completed) jobs."""
    found = []
    for job in jobs:
        if job.get("status") != "completed" or PLUGIN not in (job.get("plugins") or []) or not job.get("output"):
            continue
        try:
            document = results.read(job["output"])
        except Exception:  # a missing or unreadable document: that job has no fingerprint here
            continue
        entry = entry_of(job, (document.get("plugins") or {}).get(PLUGIN, {}))
        if entry:
            found.append(entry)
    return found


# -- writing (the daemon) ----------------------------------------------------------------

def _header() -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION}


def rebuild(state_dir: Path | str, jobs: Iterable[dict[str, Any]], results) -> int:
    """Write the index afresh from the results documents of `jobs` (e.g. every completed
    job of the store: `fsck --repair` may call this); returns how many jobs it holds."""
    entries = entries_from_results(jobs, results)
    rebuild_from(state_dir, entries)
    return len(entries)


def rebuild_from(state_dir: Path | str, entries: list[dict[str, Any]]) -> None:
    path = index_path(state_dir)
    os.makedirs(path.parent, mode=0o750, exist_ok=True)
    atomic_write_bytes(path, b"".join(recordlog.encode(r) for r in [_header(), *entries]))


class IndexWriter:
    """The daemon's side: verified (or rebuilt) once, then one append per finished job."""

    def __init__(self, state_dir: Path | str, store, results):
        self.state_dir = Path(state_dir)
        self.store = store
        self.results = results
        self._ready = False

    def _prepare(self) -> set[str]:
        """Verify the index (rebuild it if it does not verify); the job ids it holds."""
        try:
            entries = read_index(self.state_dir)
        except IndexDamaged as exc:
            missing = not index_path(self.state_dir).exists()
            entries = entries_from_results(self.store.with_status("completed"), self.results)
            rebuild_from(self.state_dir, entries)
            (log.info if missing else log.warning)(
                "%s Rebuilt it from the results documents (%d fingerprinted jobs).", exc, len(entries))
        self._ready = True
        return {e["job_id"] for e in entries}

    def job_finished(self, job: dict[str, Any]) -> None:
        """Add a completed job that ran `fingerprint` (reads its results document once)."""
        if job.get("status") != "completed" or PLUGIN not in (job.get("plugins") or []):
            return
        if not self._ready and job["id"] in self._prepare():
            return  # the rebuild already read it
        entries = entries_from_results([job], self.results)
        if entries:
            recordlog.append(index_path(self.state_dir), entries)


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
