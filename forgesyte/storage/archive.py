"""Finished jobs, sealed into bounded, immutable TinyDB segments, plus an input index.

    <state>/archive/<name>.json      a TinyDB file of SEGMENT_SIZE finished jobs
    <state>/archive/manifest.json    which segments exist, each stamped with generations
    <state>/index/<NN>.json          compacted index: input key -> facts of its newest
                                     archived job; sha256 -> the first job with that content
    <state>/index/log.jsonl          index changes since the last compaction (append-only)

A segment is written once (atomically, fsync'd) and never edited in place:
`retry` and `prune` write a new segment under a new name and retire the old
one. Every manifest entry carries the generation of the active file that
made it visible (`gen`) and, once replaced, the generation that retired it
(`retired`). A reader uses exactly the entries visible at its snapshot's
generation, so a seal or replacement is atomic for readers even though it
spans several files. See docs/storage.md.

The index is derived data. Sealing appends to the log (a few KB) instead of
rewriting buckets; the writer compacts the log into the buckets every
COMPACT_AT lines, so neither cost grows with the history.
"""

from __future__ import annotations

import json
import os
import secrets
import zlib
from pathlib import Path
from typing import Any

from forgesyte.storage.atomic import atomic_write_bytes, atomic_write_json, fsync_dir

SEGMENT_SIZE = 250
BUCKETS = 64
COMPACT_AT = 20_000
ARCHIVE_DIR = "archive"
INDEX_DIR = "index"
MANIFEST = "manifest.json"
LOG = "log.jsonl"

# An index entry: [job id, size, mtime_ns, sha256, original id (itself unless a duplicate)]
IndexEntry = list


def bucket_of(input_key: str) -> int:
    return zlib.crc32(input_key.encode("utf-8")) % BUCKETS


def sha_bucket_of(sha256: str) -> int:
    return int(sha256[:8], 16) % BUCKETS


def index_entry(job: dict[str, Any]) -> IndexEntry:
    return [job["id"], job["size"], job.get("mtime_ns", 0), job["sha256"], job.get("duplicate_of") or job["id"]]


def visible(entry: dict[str, Any], gen: int) -> bool:
    return entry["gen"] <= gen and (entry.get("retired") is None or entry["retired"] > gen)


class Archive:
    def __init__(self, state_dir: Path | str):
        self.dir = Path(state_dir) / ARCHIVE_DIR
        self.index_dir = Path(state_dir) / INDEX_DIR

    # -- segments -------------------------------------------------------------
    def write_segment(self, jobs: list[dict[str, Any]], gen: int) -> dict[str, Any]:
        """Write a new sealed segment; returns its manifest entry (visible from `gen`)."""
        os.makedirs(self.dir, mode=0o750, exist_ok=True)
        ordered = sorted(jobs, key=lambda j: j["id"])
        name = f"{ordered[0]['id']}-{secrets.token_hex(3)}"
        table = {str(i + 1): job for i, job in enumerate(ordered)}
        blob = json.dumps({"jobs": table}, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        atomic_write_bytes(self.dir / f"{name}.json", blob)
        counts: dict[str, int] = {}
        for job in jobs:
            counts[job["status"]] = counts.get(job["status"], 0) + 1
        return {"name": name, "min_id": ordered[0]["id"], "max_id": ordered[-1]["id"],
                "count": len(jobs), "counts": counts, "gen": gen, "retired": None,
                "oldest_finish": min(j["finished_at"] or "" for j in jobs)}

    def read_segment(self, name: str) -> list[dict[str, Any]]:
        """Raises FileNotFoundError if a writer removed it after the caller's snapshot."""
        with open(self.dir / f"{name}.json", "rb") as fh:
            return list(json.load(fh).get("jobs", {}).values())

    def remove_segment(self, name: str) -> None:
        try:
            os.unlink(self.dir / f"{name}.json")
        except FileNotFoundError:
            pass

    def segment_names_on_disk(self) -> set[str]:
        try:
            return {p.name[:-5] for p in os.scandir(self.dir) if p.name.endswith(".json")
                    and not p.name.startswith(".") and p.name != MANIFEST}
        except FileNotFoundError:
            return set()

    def read_manifest(self) -> list[dict[str, Any]]:
        try:
            with open(self.dir / MANIFEST, "rb") as fh:
                return json.load(fh)["segments"]
        except FileNotFoundError:
            return []

    def write_manifest(self, entries: list[dict[str, Any]]) -> None:
        os.makedirs(self.dir, mode=0o750, exist_ok=True)
        atomic_write_json(self.dir / MANIFEST, {"segments": entries}, indent=None)

    # -- input index ----------------------------------------------------------
    def read_bucket(self, number: int) -> dict[str, dict]:
        """{"inputs": {input key: IndexEntry}, "shas": {sha256: original job id}}"""
        try:
            with open(self.index_dir / f"{number:02d}.json", "rb") as fh:
                return json.load(fh)
        except FileNotFoundError:
            return {}

    def write_bucket(self, number: int, entries: dict[str, dict]) -> None:
        os.makedirs(self.index_dir, mode=0o750, exist_ok=True)
        blob = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        atomic_write_bytes(self.index_dir / f"{number:02d}.json", blob)

    def append_log(self, records: list[dict[str, Any]]) -> None:
        """Append index changes and fsync: ~100 bytes a job, whatever the history."""
        if not records:
            return
        os.makedirs(self.index_dir, mode=0o750, exist_ok=True)
        data = "".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in records)
        fd = os.open(self.index_dir / LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            os.write(fd, data.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_log(self, needle: str | None = None) -> list[dict[str, Any]]:
        """Log records (only lines containing `needle`, if given). A torn last line is skipped."""
        try:
            with open(self.index_dir / LOG, "r", encoding="utf-8") as fh:
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

    def reset_log(self) -> None:
        atomic_write_bytes(self.index_dir / LOG, b"")

    def lookup_input(self, input_key: str) -> IndexEntry | None:
        """For readers: the compacted bucket, overlaid with newer log records."""
        entry = self.read_bucket(bucket_of(input_key)).get("inputs", {}).get(input_key)
        needle = json.dumps(input_key, ensure_ascii=False)
        for record in self.read_log(needle):
            if record.get("i") == input_key and (entry is None or record["e"][0] >= entry[0]):
                entry = record["e"]
        return entry

    def sync(self) -> None:
        for folder in (self.dir, self.index_dir):
            if folder.is_dir():
                fsync_dir(folder)
