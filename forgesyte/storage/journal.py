"""The journal: every flush of the store appends one checksummed record, and nothing else.

    <state>/jobs/journal.<gen>.log   (recordlog.py: one "<crc32> <json>" line a record)

The first record is a header naming the format, its version and the
generation of the manifest it continues. Each further record is one flush:

    {"seq": n, "put": [job records as they now stand], "counts": {status: n},
     "floor": highest id issued}

A flush therefore costs one append of the jobs that changed, however many jobs
are pending or on record; the chunks catch up at the next checkpoint, which
starts a new journal. A record is all-or-nothing (its checksum covers the whole
flush); a torn last record is a flush that never completed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgesyte.storage import recordlog
from forgesyte.storage.atomic import atomic_write_bytes
from forgesyte.storage.errors import StateDamaged

FORMAT, VERSION = "forgesyte-journal", 1


@dataclass
class Journal:
    batches: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0
    good_end: int = 0  # offset after the last good record; a torn tail lies beyond
    torn: bool = False

    @property
    def overlay(self) -> dict[str, dict[str, Any]]:
        """Each job changed since the checkpoint, as it now stands."""
        records: dict[str, dict[str, Any]] = {}
        for batch in self.batches:
            for record in batch["put"]:
                records[record["id"]] = record
        return records


def create(path: Path, gen: int) -> int:
    """A new journal holding only its header; returns its size."""
    data = recordlog.encode({"format": FORMAT, "version": VERSION, "gen": gen})
    atomic_write_bytes(path, data)
    return len(data)


def append(path: Path, batch: dict[str, Any]) -> int:
    """Append one flush (fsync'd; cut back on a short write); returns the new size.
    A journal that vanished is an error, never silently created again."""
    if not path.exists():
        raise FileNotFoundError(2, "The journal disappeared", str(path))
    return recordlog.append(path, [batch])


def parse(raw: bytes, name: str, gen: int) -> Journal:
    """Verify a journal's bytes. A torn tail is reported (`torn`), damage inside raises."""
    scan = recordlog.scan_all(raw)
    if scan.damaged_inside:
        raise StateDamaged(name, f"is damaged (line {scan.damaged_lines[0]} does not verify)")
    if not scan.records:
        raise StateDamaged(name, "is empty" if not raw else "has no readable header")
    recordlog.check_header(name, scan.records[0], FORMAT, VERSION)
    if scan.records[0].get("gen") != gen:
        raise StateDamaged(name, f"continues generation {scan.records[0].get('gen')!r}, not {gen}")
    batches = scan.records[1:]
    last = None
    for batch in batches:
        if not isinstance(batch.get("put"), list) or not isinstance(batch.get("seq"), int) or (
                last is not None and batch["seq"] <= last):
            raise StateDamaged(name, f"holds a record out of sequence (seq {batch.get('seq')!r})")
        last = batch["seq"]
    return Journal(batches, scan.size, scan.good_end, scan.torn_tail)


def read(path: Path, name: str, gen: int) -> Journal:
    """FileNotFoundError is left to the caller (a reader whose snapshot is stale retries)."""
    from forgesyte.storage.tinystore import read_raw

    return parse(read_raw(path, name), name, gen)


def cut_tail(path: Path, journal: Journal) -> bytes:
    """Cut a torn tail off (the writer, at open); returns the bytes cut, for quarantine."""
    with open(path, "rb") as fh:
        fh.seek(journal.good_end)
        tail = fh.read()
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, journal.good_end)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tail
