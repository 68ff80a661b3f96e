"""Append-only logs of individually checksummed JSON records.

One record a line: ``<crc32 of the JSON, 8 hex digits> <JSON>\\n``. A reader
trusts a line only when its checksum matches; a torn or short tail (a crash
or a full disk mid-append) shows up as a bad last line and is cut, never
trusted. Appends check that every byte was written (short writes, ENOSPC)
before they count, and are fsync'd.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any, Iterator


class ShortWrite(OSError):
    """Fewer bytes reached the file than were written (a full disk, a quota)."""


def encode(record: dict[str, Any]) -> bytes:
    body = json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def decode(line: bytes) -> dict[str, Any] | None:
    """The record of one line (without its newline), or None when it does not verify."""
    if len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        record = json.loads(body)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def write_all(fd: int, data: bytes) -> None:
    """os.write until everything is written; a write that makes no progress raises."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise ShortWrite(28, "No space left on device (short write)")
        view = view[written:]


def append(path: Path | str, records: list[dict[str, Any]], mode: int = 0o640) -> int:
    """Append records durably; returns the file's new size. On any error the file is
    cut back to its old size, so a failed append leaves no partial record behind."""
    if not records:
        return os.path.getsize(path) if os.path.exists(path) else 0
    data = b"".join(encode(r) for r in records)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, mode)
    try:
        size = os.fstat(fd).st_size
        try:
            write_all(fd, data)
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise
        return size + len(data)
    finally:
        os.close(fd)


def scan(path: Path | str, offset: int = 0) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """(offset after the line, record or None if damaged) for every complete line from
    `offset`. A last line without its newline is not yielded (it may still be written)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return
    position = offset
    start = 0
    while True:
        end = data.find(b"\n", start)
        if end < 0:
            return
        position = offset + end + 1
        yield position, decode(data[start:end])
        start = end + 1


def read(path: Path | str) -> tuple[list[dict[str, Any]], int, int]:
    """(good records before the first damaged line, offset where they end, file size)."""
    records: list[dict[str, Any]] = []
    good_end = 0
    for position, record in scan(path):
        if record is None:
            break
        records.append(record)
        good_end = position
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        size = 0
    return records, good_end, size
