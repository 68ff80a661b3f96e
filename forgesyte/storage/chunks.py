"""Job records at rest: bounded TinyDB chunks of consecutive ids, and the manifest naming them.

    <state>/jobs/manifest.json              which chunks and which journal make up the store
    <state>/jobs/<first id>.<gen>.json      a chunk: a TinyDB document of up to CHUNK_SIZE jobs
    <state>/jobs/journal.<gen>.log          transitions since the checkpoint that made <gen>

Chunks partition the id space: chunk i holds every id from its `min_id` up to
the next chunk's `min_id` (the first chunk also holds anything below). Ids only
grow (ids.py keeps a floor), so new jobs land in the last chunk, which is split
when it outgrows CHUNK_SIZE. A chunk file is never edited: a checkpoint writes a
new file under a new name (the generation is part of it) and the manifest that
names it retires the old one. Every file is a checksummed document
(tinystore.py); the manifest also records each chunk's CRC, so a valid but stale
chunk cannot stand in for the current one.
"""

from __future__ import annotations

import bisect
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from forgesyte.storage.errors import StateDamaged
from forgesyte.storage.tinystore import read_document, read_raw, split_document, write_document

JOBS_DIR = "jobs"
MANIFEST = "manifest.json"
MANIFEST_FORMAT, CHUNK_FORMAT, VERSION = "forgesyte-manifest", "forgesyte-chunk", 1
CHUNK_SIZE = 250
PRUNED = "pruned"  # a tombstone: the facts of a pruned job, kept so its input is not taken again
STATUSES = ("pending", "running", "completed", "failed")

_CHUNK_NAME = re.compile(r"^([0-9a-z]{16})\.(\d{8})\.json$")
_JOURNAL_NAME = re.compile(r"^journal\.(\d{8})\.log$")


def rel(name: str) -> str:
    """A file of the jobs folder, named relative to the state folder (for messages)."""
    return f"{JOBS_DIR}/{name}"


def chunk_name(min_id: str, gen: int) -> str:
    return f"{min_id}.{gen:08d}.json"


def journal_name(gen: int) -> str:
    return f"journal.{gen:08d}.log"


def name_gen(name: str) -> int | None:
    """The generation a chunk or journal file was written for, or None if not ours."""
    match = _CHUNK_NAME.match(name) or _JOURNAL_NAME.match(name)
    return int(match.groups()[-1]) if match else None


def is_chunk_name(name: str) -> bool:
    return _CHUNK_NAME.match(name) is not None


def count_statuses(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        status = record.get("status")
        counts[status] = counts.get(status, 0) + 1
    return counts


@dataclass
class Manifest:
    gen: int = 0
    seq: int = 0  # the last journal batch folded into the chunks
    floor: str | None = None  # the highest job id ever issued in this state
    journal: str = field(default_factory=lambda: journal_name(0))
    chunks: list[dict[str, Any]] = field(default_factory=list)  # sorted by min_id
    retired: list[str] = field(default_factory=list)  # files this checkpoint superseded
    counts: dict[str, int] = field(default_factory=dict)  # by status, at this checkpoint

    def __post_init__(self) -> None:
        self._min_ids = [entry["min_id"] for entry in self.chunks]

    def chunk_index(self, job_id: str) -> int | None:
        """Which chunk holds (or would hold) this id."""
        if not self.chunks:
            return None
        return max(0, bisect.bisect_right(self._min_ids, job_id) - 1)

    def bounds(self, index: int) -> tuple[str | None, str | None]:
        """[low, high) of the ids chunk `index` holds; None means unbounded."""
        low = self.chunks[index]["min_id"] if index > 0 else None
        high = self.chunks[index + 1]["min_id"] if index + 1 < len(self.chunks) else None
        return low, high

    def body(self) -> dict[str, Any]:
        return {"gen": self.gen, "seq": self.seq, "floor": self.floor, "journal": self.journal,
                "chunks": self.chunks, "retired": self.retired, "counts": self.counts}

    @classmethod
    def from_body(cls, body: Any) -> "Manifest":
        name = rel(MANIFEST)
        try:
            manifest = cls(gen=int(body["gen"]), seq=int(body["seq"]), floor=body["floor"],
                           journal=str(body["journal"]), chunks=list(body["chunks"]),
                           retired=list(body["retired"]), counts=dict(body["counts"]))
            for entry in manifest.chunks:
                for key in ("name", "min_id", "count", "counts", "crc32"):
                    entry[key]  # noqa: B018 - presence check
        except (KeyError, TypeError, ValueError):
            raise StateDamaged(name, "lacks fields every manifest has") from None
        if manifest._min_ids != sorted(set(manifest._min_ids)):
            raise StateDamaged(name, "lists chunks out of order")
        return manifest


def jobs_dir(state_dir: Path) -> Path:
    return Path(state_dir) / JOBS_DIR


def read_manifest(state_dir: Path) -> Manifest | None:
    """None when there is no manifest (a new state, or a lost one: the caller decides)."""
    try:
        body = read_document(jobs_dir(state_dir) / MANIFEST, rel(MANIFEST), MANIFEST_FORMAT, VERSION)
    except FileNotFoundError:
        return None
    return Manifest.from_body(body)


def write_manifest(state_dir: Path, manifest: Manifest) -> None:
    os.makedirs(jobs_dir(state_dir), mode=0o750, exist_ok=True)
    write_document(jobs_dir(state_dir) / MANIFEST, MANIFEST_FORMAT, VERSION, manifest.body())


def read_chunk(state_dir: Path, entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """id -> record. FileNotFoundError: a writer retired it after the caller's snapshot."""
    name = rel(entry["name"])
    header, data = split_document(read_raw(jobs_dir(state_dir) / entry["name"], name), name,
                                  CHUNK_FORMAT, VERSION)
    if header["crc32"] != entry["crc32"]:
        raise StateDamaged(name, "is not the version of it that the manifest names (checksum differs)")
    try:
        body = json.loads(data)
    except ValueError:
        raise StateDamaged(name, "holds JSON that does not parse") from None
    return chunk_records(body, name, entry)


def chunk_records(body: Any, name: str, entry: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    try:
        records = {job["id"]: job for job in body["jobs"].values()}
    except (KeyError, TypeError, AttributeError):
        raise StateDamaged(name, "is not a table of job records") from None
    if entry is not None and len(records) != entry["count"]:
        raise StateDamaged(name, f"holds {len(records)} jobs where the manifest says {entry['count']}")
    return records


def write_chunk(state_dir: Path, records: list[dict[str, Any]], gen: int,
                min_id: str | None = None) -> dict[str, Any]:
    """Write records (sorted by id) as a new chunk; returns its manifest entry."""
    os.makedirs(jobs_dir(state_dir), mode=0o750, exist_ok=True)
    min_id = min_id or records[0]["id"]
    name = chunk_name(min_id, gen)
    table = {str(i + 1): record for i, record in enumerate(records)}  # TinyDB's layout
    crc = write_document(jobs_dir(state_dir) / name, CHUNK_FORMAT, VERSION, {"jobs": table})
    return chunk_entry(name, min_id, records, crc)


def chunk_entry(name: str, min_id: str, records: list[dict[str, Any]], crc: int) -> dict[str, Any]:
    finishes = [r["finished_at"] for r in records
                if r.get("status") in ("completed", "failed") and r.get("finished_at")]
    return {"name": name, "min_id": min_id, "count": len(records), "counts": count_statuses(records),
            "crc32": f"{crc:08x}", "oldest_finish": min(finishes) if finishes else None}
