"""What the store knows of every input and every content, without reading history.

    <state>/index/<NN>.json   {"inputs": {input key: [id, size, mtime_ns, sha256, original id]},
                               "shas":   {sha256: id of the first job with that content}}
    <state>/index/log.jsonl   changes since the last compaction, one JSON record a line

The index is derived data (the segments hold the truth). A job leaving the
active file appends a record or two to the log (~100 bytes, fsync'd); every
COMPACT_AT records the writer folds the log into the 64 buckets. So neither
sealing nor lookups cost more as the history grows. The writer holds it all
in memory (`Index`); a reader looks up one input with `lookup_input`: one
bucket plus a substring scan of the log.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any

from forgesyte.storage.atomic import atomic_write_bytes

BUCKETS = 64
COMPACT_AT = 20_000
INDEX_DIR = "index"
LOG = "log.jsonl"

# An entry: [job id, size, mtime_ns, sha256, original id (itself unless a duplicate)]
IndexEntry = list


def bucket_of(input_key: str) -> int:
    return zlib.crc32(input_key.encode("utf-8")) % BUCKETS


def sha_bucket_of(sha256: str) -> int:
    return int(sha256[:8], 16) % BUCKETS


def index_entry(job: dict[str, Any]) -> IndexEntry:
    return [job["id"], job["size"], job.get("mtime_ns", 0), job["sha256"], job.get("duplicate_of") or job["id"]]


def _read_bucket(folder: Path, number: int) -> dict[str, dict]:
    try:
        with open(folder / f"{number:02d}.json", "rb") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return {}


def _read_log(folder: Path, needle: str | None = None) -> list[dict[str, Any]]:
    """Log records (only lines containing `needle`, if given). A torn last line is skipped."""
    try:
        with open(folder / LOG, "r", encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return []
    records = []
    for line in text.splitlines():
        if needle is not None and needle not in line:
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def lookup_input(state_dir: Path | str, input_key: str) -> IndexEntry | None:
    """For readers: the compacted bucket, overlaid with newer log records."""
    folder = Path(state_dir) / INDEX_DIR
    entry = _read_bucket(folder, bucket_of(input_key)).get("inputs", {}).get(input_key)
    needle = json.dumps(input_key, ensure_ascii=False)
    for record in _read_log(folder, needle):
        if record.get("i") == input_key and (entry is None or record["e"][0] >= entry[0]):
            entry = record["e"]
    return entry


class Index:
    """The writer's in-memory index, persisted through the log and compaction."""

    def __init__(self, state_dir: Path | str):
        self.dir = Path(state_dir) / INDEX_DIR
        self._inputs: list[dict[str, IndexEntry]] = []
        self._shas: list[dict[str, str]] = []
        for number in range(BUCKETS):
            bucket = _read_bucket(self.dir, number)
            self._inputs.append(bucket.get("inputs", {}))
            self._shas.append(bucket.get("shas", {}))
        records = _read_log(self.dir)
        for record in records:
            self._apply(record)
        self._log_lines = len(records)
        self._pending: list[dict[str, Any]] = []

    def entry(self, input_key: str) -> IndexEntry | None:
        return self._inputs[bucket_of(input_key)].get(input_key)

    def original(self, sha256: str) -> str | None:
        return self._shas[sha_bucket_of(sha256)].get(sha256)

    @property
    def dirty(self) -> bool:
        return bool(self._pending)

    def _apply(self, record: dict[str, Any]) -> bool:
        """Newest job per input, first job per content; True if it changed anything."""
        if "i" in record:
            bucket = self._inputs[bucket_of(record["i"])]
            current = bucket.get(record["i"])
            if current is None or current[0] <= record["e"][0]:
                bucket[record["i"]] = record["e"]
                return True
        elif "s" in record:
            bucket = self._shas[sha_bucket_of(record["s"])]
            first = bucket.get(record["s"])
            if first is None or record["id"] < first:
                bucket[record["s"]] = record["id"]
                return True
        return False

    def _add(self, record: dict[str, Any]) -> None:
        if self._apply(record):
            self._pending.append(record)

    def record(self, job: dict[str, Any]) -> None:
        """A job leaves the active file (sealed or pruned): remember its input and content."""
        self._add({"i": job["input"], "e": index_entry(job)})
        if job.get("sha256") and not job.get("duplicate_of"):
            self._add({"s": job["sha256"], "id": job["id"]})

    def touch(self, input_key: str, job_id: str, mtime_ns: int) -> None:
        """Same content, new mtime, for an archived job."""
        entry = self.entry(input_key)
        if entry and entry[0] == job_id:
            updated = list(entry)
            updated[2] = mtime_ns
            self._add({"i": input_key, "e": updated})

    def flush(self) -> None:
        """Append what changed (fsync'd); fold the log into the buckets now and then."""
        if self._pending:
            os.makedirs(self.dir, mode=0o750, exist_ok=True)
            data = "".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n"
                           for r in self._pending)
            fd = os.open(self.dir / LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            try:
                os.write(fd, data.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
            self._log_lines += len(self._pending)
            self._pending = []
        if self._log_lines >= COMPACT_AT:
            self.compact()

    def compact(self) -> None:
        for number in range(BUCKETS):
            blob = json.dumps({"inputs": self._inputs[number], "shas": self._shas[number]},
                              separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            atomic_write_bytes(self.dir / f"{number:02d}.json", blob)
        atomic_write_bytes(self.dir / LOG, b"")
        self._log_lines = 0
