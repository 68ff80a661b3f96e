"""Crash-safe file replacement: a reader sees the old file or the new one, never half.

temp file in the same directory -> write -> fsync -> os.replace -> fsync the
directory, so that a kill -9 or power loss at any instant leaves a loadable file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def fsync_dir(directory: Path | str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path | str, data: bytes, mode: int = 0o640) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_json(path: Path | str, document: Any, indent: int | None = 2) -> None:
    text = json.dumps(document, indent=indent, ensure_ascii=False, allow_nan=False)
    atomic_write_bytes(path, text.encode("utf-8") + b"\n")
