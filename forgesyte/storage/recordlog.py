"""Append-only logs of individually checksummed JSON records.

One record a line: ``<crc32 of the JSON, 8 hex digits> <JSON>\\n``. A reader
trusts a line only when its checksum matches; a torn or short tail (a crash
or a full disk mid-append) shows up as bad bytes after the last good record
and is cut, never trusted. Appends check that every byte was written (short
writes, ENOSPC) before they count, and are fsync'd; a failed append cuts the
file back to where it was, so it leaves no partial record behind.

The first record of every log ForgeSyte writes is a header naming its format
and version (`header`, `check_header`), so a log from another version is
refused rather than guessed at.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from forgesyte.storage.atomic import ShortWrite, write_all
from forgesyte.storage.errors import StateDamaged, UnknownFormat

__all__ = ["ShortWrite", "append", "check_header", "decode", "encode", "read", "scan", "scan_all"]


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
            if os.fstat(fd).st_size != size + len(data):
                raise ShortWrite()
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
    start = 0
    while True:
        end = data.find(b"\n", start)
        if end < 0:
            return
        yield offset + end + 1, decode(data[start:end])
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


@dataclass
class Scan:
    """Everything about one log: its verified records and where it is damaged."""

    records: list[dict[str, Any]] = field(default_factory=list)
    damaged_lines: list[int] = field(default_factory=list)  # 1-based numbers of lines that do not verify
    good_end: int = 0  # offset just after the last verified record
    size: int = 0
    damaged_inside: bool = False  # a bad line with a good record after it: not a torn tail

    @property
    def torn_tail(self) -> bool:
        """Bytes after the last good record that are not a good record (a crash mid-append)."""
        return self.size > self.good_end and not self.damaged_inside


def _verified(line: bytes) -> bool:
    try:
        return len(line) >= 10 and line[8:9] == b" " and int(line[:8], 16) == zlib.crc32(line[9:])
    except ValueError:
        return False


def scan_all(raw: bytes, needle: bytes | None = None) -> Scan:
    """Verify every line of a log's bytes. With `needle`, lines without it are verified
    but not parsed (and not returned), except the first (a header)."""
    result = Scan(size=len(raw))
    start, number = 0, 0
    while start < len(raw):
        end = raw.find(b"\n", start)
        number += 1
        if end < 0:  # an incomplete last line
            result.damaged_lines.append(number)
            break
        if needle is not None and number > 1 and raw.find(needle, start, end) < 0:
            if not _verified(raw[start:end]):
                result.damaged_lines.append(number)
            else:
                if result.damaged_lines:
                    result.damaged_inside = True
                result.good_end = end + 1
            start = end + 1
            continue
        record = decode(raw[start:end])
        if record is None:
            result.damaged_lines.append(number)
        else:
            if result.damaged_lines:
                result.damaged_inside = True
            result.records.append(record)
            result.good_end = end + 1
        start = end + 1
    return result


def head_and_tail(path: Path | str, whole: bool, tail: int = 65536) -> tuple[bytes, bytes, int]:
    """(first line, bytes from `start` to the end, start) of a log: all of it when `whole`,
    else the header line and the last `tail` bytes (what a writer's open looks at: a long
    log is history, and its end is where a crash leaves a torn record). OSError as open
    raises it (FileNotFoundError: no log yet)."""
    with open(path, "rb") as fh:
        first = fh.readline()
        size = fh.seek(0, os.SEEK_END)
        start = 0 if whole or size <= tail else size - tail
        fh.seek(start)
        return first, fh.read(), start


def check_header(name: str, record: dict[str, Any] | None, fmt: str, version: int) -> None:
    """The first record must name this format and a version we read."""
    if record is None or record.get("format") != fmt:
        raise StateDamaged(name, "does not start with its ForgeSyte header")
    if record.get("version") != version:
        raise UnknownFormat(name, f"has format version {record.get('version')!r} and this ForgeSyte "
                            f"reads version {version}")
