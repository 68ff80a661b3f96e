"""What the store knows of every input and every content, without reading the records.

    <state>/index/NNN.json  256 checksummed buckets (tinystore.py):
                            {"gen": G, "inputs": {input key: [id, size, mtime_ns, sha256, original id]},
                                       "shas":   {sha256: id of the first job with that content}}
    <state>/index/log.log   changes since the buckets were written (recordlog.py):
                            header {"format", "version", "base": G}, then one record per checkpoint
                            {"gen": g, "i": {input: entry}, "s": {sha256: id}}

The index is derived data: everything in it follows from the job records
(chunks + journal, pruned jobs included as tombstones), and `Index.rebuild`
makes it again from them. It is verified when the writer opens the store and
rebuilt when it does not verify; it is never trusted over the records.

Entries only move forward: an input's entry is its newest job (highest id:
ids grow in creation order), a content's entry its first job, so applying a
change twice is harmless. The writer holds the index in memory (~250 bytes
per input) and appends the changes of each checkpoint (before the manifest
that commits the checkpoint, so the index always covers at least the
manifest's generation; the open journal is replayed on top).

Compaction rolls: once the log holds COMPACT_AT entries (or a tenth of the
index, whichever is more), each following checkpoint rewrites the next
ROLL_STEP (32) buckets at its generation, so no single checkpoint rewrites the
whole index (that was 1.8 s at 100,000 inputs, during which the daemon's
loop dispatched nothing). When every bucket has been rewritten, the log is
cut to the records newer than the oldest bucket. Buckets may therefore be of
different generations, each between the log's base and its last record;
applying a record a bucket already holds changes nothing (entries only move
forward). Readers read the log before the bucket: a bucket read later is
never older than the log's base, so a rotation or a cut between the two
reads cannot hide a change.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any, Iterable

from forgesyte.storage import recordlog
from forgesyte.storage.atomic import atomic_write_bytes
from forgesyte.storage.errors import StateDamaged, StateError
from forgesyte.storage.tinystore import read_document, read_raw, write_document

BUCKETS = 256
COMPACT_AT = 5_000
ROLL_STEP = 32  # buckets rewritten per checkpoint while a compaction rolls (a turn: 8 checkpoints)
INDEX_DIR = "index"
LOG = "log.log"
BUCKET_FORMAT, LOG_FORMAT, VERSION = "forgesyte-index-bucket", "forgesyte-index-log", 1

# An entry: [job id, size, mtime_ns, sha256, original id (itself unless a duplicate)]
IndexEntry = list


class IndexDamaged(StateDamaged):
    """Derived data that does not verify: rebuild it from the records."""


def bucket_of(input_key: str) -> int:
    return zlib.crc32(input_key.encode("utf-8", "surrogateescape")) % BUCKETS


def sha_bucket_of(sha256: str) -> int:
    try:
        return int(sha256[:8], 16) % BUCKETS
    except ValueError:
        return zlib.crc32(sha256.encode("utf-8", "surrogateescape")) % BUCKETS


def index_entry(job: dict[str, Any]) -> IndexEntry:
    return [job["id"], job.get("size", 0), job.get("mtime_ns", 0), job.get("sha256", ""),
            job.get("duplicate_of") or job["id"]]


def bucket_name(number: int) -> str:
    return f"{number:03d}.json"


def rel(name: str) -> str:
    return f"{INDEX_DIR}/{name}"


def _read_bucket(folder: Path, number: int) -> dict[str, Any] | None:
    name = bucket_name(number)
    try:
        body = read_document(folder / name, rel(name), BUCKET_FORMAT, VERSION)
    except FileNotFoundError:
        return None
    except StateError as exc:
        raise IndexDamaged(exc.name, exc.problem) from None
    if not (isinstance(body, dict) and isinstance(body.get("inputs"), dict)
            and isinstance(body.get("shas"), dict) and isinstance(body.get("gen"), int)):
        raise IndexDamaged(rel(name), "is not an index bucket")
    return body


def _read_log(folder: Path, needle: bytes | None = None) -> tuple[int, list[dict[str, Any]]] | None:
    """(base generation, change records); None when there is no log. With `needle`, every
    line is verified but only the records that contain it are parsed (a reader's lookup)."""
    try:
        raw = read_raw(folder / LOG, rel(LOG))
    except FileNotFoundError:
        return None
    except StateError as exc:
        raise IndexDamaged(exc.name, exc.problem) from None
    scan = recordlog.scan_all(raw, needle)
    if not scan.records:
        raise IndexDamaged(rel(LOG), "is empty" if not raw else "has no readable header")
    if scan.damaged_lines:
        # Readers may race an append (a torn tail); the writer rebuilds either way.
        if scan.damaged_inside or not scan.records:
            raise IndexDamaged(rel(LOG), f"is damaged (line {scan.damaged_lines[0]} does not verify)")
    try:
        recordlog.check_header(rel(LOG), scan.records[0], LOG_FORMAT, VERSION)
    except StateError as exc:
        raise IndexDamaged(exc.name, exc.problem) from None
    return int(scan.records[0].get("base", 0)), scan.records[1:]


def lookup_input(state_dir: Path | str, input_key: str) -> IndexEntry | None:
    """For readers: one bucket, overlaid with the logged changes. Raises IndexDamaged."""
    folder = Path(state_dir) / INDEX_DIR
    # The log first: the writer may cut it right after rewriting buckets, and a bucket read
    # after the log is never older than the log's base (see the module docstring).
    logged = _read_log(folder, json.dumps(input_key, ensure_ascii=False).encode("utf-8", "surrogateescape"))
    bucket = _read_bucket(folder, bucket_of(input_key))
    entry = (bucket or {}).get("inputs", {}).get(input_key)
    for record in logged[1] if logged else ():
        candidate = record.get("i", {}).get(input_key)
        if candidate is not None and (entry is None or entry[0] <= candidate[0]):
            entry = candidate
    return entry


class Index:
    """The writer's in-memory index, persisted through the log and compaction."""

    def __init__(self, state_dir: Path | str):
        self.dir = Path(state_dir) / INDEX_DIR
        self._inputs: list[dict[str, IndexEntry]] = [{} for _ in range(BUCKETS)]
        self._shas: list[dict[str, str]] = [{} for _ in range(BUCKETS)]
        self._changed_inputs: dict[str, IndexEntry] = {}
        self._changed_shas: dict[str, str] = {}
        self._logged = 0  # entries in the log (what the next cut may drop)
        self._fresh = False  # the files on disk are not (yet) this index: write them whole
        self._bucket_gen = [0] * BUCKETS  # the generation each bucket file was written at
        self._cursor: int | None = None  # the next bucket a rolling compaction rewrites

    # -- loading -------------------------------------------------------------------
    @classmethod
    def load(cls, state_dir: Path | str, covers: int) -> "Index":
        """The index on disk, verified: every file checks out and it covers generation
        `covers` (the manifest's). Raises IndexDamaged otherwise."""
        index = cls(state_dir)
        logged = _read_log(index.dir)
        buckets = [_read_bucket(index.dir, n) for n in range(BUCKETS)]
        if logged is None and all(b is None for b in buckets):
            if covers > 0:
                raise IndexDamaged(rel(""), "is missing")
            return index  # a new state: nothing to know yet
        if logged is None:
            raise IndexDamaged(rel(LOG), "is missing")
        missing = [n for n, b in enumerate(buckets) if b is None]
        if missing:
            raise IndexDamaged(rel(bucket_name(missing[0])), "is missing")
        base, records = logged
        gens = [r.get("gen") for r in records]
        top = max([base, *[g for g in gens if isinstance(g, int)]])
        expected = base
        for gen in gens:
            if not isinstance(gen, int) or gen > expected + 1 or gen < base:
                raise IndexDamaged(rel(LOG), f"skips from generation {expected} to {gen!r}")
            expected = max(expected, gen)
        for number, bucket in enumerate(buckets):
            if not base <= bucket["gen"] <= top:
                raise IndexDamaged(rel(bucket_name(number)), f"is of generation {bucket['gen']}, outside "
                                   f"the log's {base}..{top}")
        if top < covers:
            raise IndexDamaged(rel(LOG), f"ends at generation {top}, before the store's {covers}")
        for number, bucket in enumerate(buckets):
            index._inputs[number] = bucket["inputs"]
            index._shas[number] = bucket["shas"]
            index._bucket_gen[number] = bucket["gen"]
        for record in records:
            for key, entry in record.get("i", {}).items():
                index._apply_input(key, entry)
            for sha, job_id in record.get("s", {}).items():
                index._apply_sha(sha, job_id)
            index._logged += len(record.get("i", {})) + len(record.get("s", {}))
        return index

    @classmethod
    def rebuild(cls, state_dir: Path | str, records: Iterable[dict[str, Any]]) -> "Index":
        """From job records (tombstones included); written whole at the next checkpoint."""
        index = cls(state_dir)
        for record in records:
            index.note(record)
        index._changed_inputs.clear()
        index._changed_shas.clear()
        index._fresh = True
        return index

    # -- queries -------------------------------------------------------------------
    def entry(self, input_key: str) -> IndexEntry | None:
        return self._inputs[bucket_of(input_key)].get(input_key)

    def original(self, sha256: str) -> str | None:
        return self._shas[sha_bucket_of(sha256)].get(sha256)

    def __len__(self) -> int:
        return sum(len(b) for b in self._inputs)

    # -- changes ---------------------------------------------------------------------
    def _apply_input(self, key: str, entry: IndexEntry) -> bool:
        bucket = self._inputs[bucket_of(key)]
        current = bucket.get(key)
        if current is None or current[0] <= entry[0]:
            if current != entry:
                bucket[key] = list(entry)
                return True
        return False

    def _apply_sha(self, sha: str, job_id: str) -> bool:
        bucket = self._shas[sha_bucket_of(sha)]
        first = bucket.get(sha)
        if first is None or job_id < first:
            bucket[sha] = job_id
            return True
        return False

    def note(self, job: dict[str, Any]) -> None:
        """A job was created or its facts changed (resettle, touch): remember them."""
        entry = index_entry(job)
        if self._apply_input(job["input"], entry):
            self._changed_inputs[job["input"]] = entry
        sha = job.get("sha256")
        if sha and not job.get("duplicate_of") and self._apply_sha(sha, job["id"]):
            self._changed_shas[sha] = job["id"]

    # -- persistence -------------------------------------------------------------------
    def checkpoint(self, gen: int) -> None:
        """Log this checkpoint's changes (always a record, so the log shows every
        generation); called before the manifest of `gen` is written."""
        os.makedirs(self.dir, mode=0o750, exist_ok=True)
        if self._fresh or not (self.dir / LOG).exists():
            self.compact(gen)
            return
        # Logged first even when compacting now: buckets of `gen` are then never newer than
        # the log says, whatever instant a crash picks (see load()).
        recordlog.append(self.dir / LOG, [{"gen": gen, "i": self._changed_inputs, "s": self._changed_shas}])
        self._logged += len(self._changed_inputs) + len(self._changed_shas)
        self._changed_inputs, self._changed_shas = {}, {}
        if self._cursor is None and self._logged >= max(COMPACT_AT, len(self) // 10):
            self._cursor = 0  # rewriting every bucket once per rotation stays ~10% of writes
        if self._cursor is not None:
            self._roll(gen)

    def _write_bucket(self, number: int, gen: int) -> None:
        write_document(self.dir / bucket_name(number), BUCKET_FORMAT, VERSION,
                       {"gen": gen, "inputs": self._inputs[number], "shas": self._shas[number]})
        self._bucket_gen[number] = gen

    def _roll(self, gen: int) -> None:
        """The next ROLL_STEP buckets at `gen` (after the log has `gen`'s record); once all
        are rewritten, the log loses what every bucket holds."""
        end = min(self._cursor + ROLL_STEP, BUCKETS)
        for number in range(self._cursor, end):
            self._write_bucket(number, gen)
        self._cursor = None if end == BUCKETS else end
        if self._cursor is None:
            self._cut_log()

    def _cut_log(self) -> None:
        """Rewrite the log with only the records newer than the oldest bucket (atomically:
        a crash leaves the longer log, which is just as true). Line by line, the kept lines
        as they are: no list of every record in memory."""
        base = min(self._bucket_gen)
        try:
            lines = read_raw(self.dir / LOG, rel(LOG)).split(b"\n")
        except (FileNotFoundError, StateError):
            lines = [b""]
        header = recordlog.decode(lines[0]) if lines[-1] == b"" else None  # a torn tail: not ours
        intact = header is not None and header.get("format") == LOG_FORMAT
        kept, logged = [recordlog.encode({"format": LOG_FORMAT, "version": VERSION, "base": base})], 0
        for line in lines[1:-1] if intact else ():
            record = recordlog.decode(line)
            if record is None:
                intact = False
                break
            if record.get("gen", base) > base:
                kept.append(line + b"\n")
                logged += len(record.get("i", {})) + len(record.get("s", {}))
        if not intact:  # damaged under us: the writer's memory is the truth
            self.compact(max(self._bucket_gen))
            return
        atomic_write_bytes(self.dir / LOG, b"".join(kept))
        self._logged = logged

    def compact(self, gen: int) -> None:
        """Every bucket at `gen`, then an empty log based on it (a new or rebuilt index)."""
        os.makedirs(self.dir, mode=0o750, exist_ok=True)
        for number in range(BUCKETS):
            self._write_bucket(number, gen)
        atomic_write_bytes(self.dir / LOG, recordlog.encode({"format": LOG_FORMAT, "version": VERSION,
                                                             "base": gen}))
        self._logged = 0
        self._fresh = False
        self._cursor = None
        self._changed_inputs, self._changed_shas = {}, {}

