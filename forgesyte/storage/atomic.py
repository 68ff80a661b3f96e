"""Crash-safe file replacement: a reader sees the old file or the new one, never half.

temp file in the same directory -> write every byte -> fsync -> os.replace ->
fsync the directory, so that a kill -9 or power loss at any instant leaves a
loadable file. A short write (a full disk, a quota) raises before the rename:
the old file stays, the temp file is removed, and the change does not count.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


class ShortWrite(OSError):
    """Fewer bytes reached the file than were written (a full disk, a quota)."""

    def __init__(self) -> None:
        super().__init__(errno.ENOSPC, "No space left on device (short write)")


def write_all(fd: int, data: bytes) -> None:
    """os.write until everything is written; a write that makes no progress raises."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise ShortWrite()
        view = view[written:]


def pwrite_all(fd: int, data: bytes, offset: int = 0) -> None:
    """os.pwrite until everything is written at `offset`; a write that makes no progress raises."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise ShortWrite()
        view, offset = view[written:], offset + written


def fsync_dir(directory: Path | str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(path: Path) -> Path:
    """Where an atomic write of `path` stages its bytes (a hidden name nobody reads)."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def atomic_write_bytes(path: Path | str, data: bytes, mode: int = 0o640,
                       prepare: Callable[[int], None] | None = None) -> None:
    """`prepare(fd)`: called on the temp file before the bytes go in (e.g. to hand it to
    another owner with an exact mode, as the mailbox does)."""
    path = Path(path)
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        if prepare is not None:
            prepare(fd)
        write_all(fd, data)
        os.fsync(fd)
        if os.fstat(fd).st_size != len(data):
            raise ShortWrite()
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path | str, document: Any, indent: int | None = 2) -> None:
    text = json.dumps(document, indent=indent, ensure_ascii=False, allow_nan=False)
    atomic_write_bytes(path, text.encode("utf-8") + b"\n")
