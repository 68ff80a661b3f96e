"""Checksummed, versioned JSON documents, and a TinyDB Storage that reads and writes them.

Every state file that is not a log is one of these:

    {"format": "forgesyte-chunk", "version": 1, "length": 1234, "crc32": "0a1b2c3d"}\\n
    <length bytes of JSON: the body>

The header line says what the file is and which version of its format, and
carries the length and CRC-32 of the body, so a truncated, emptied, garbled or
foreign file is detected before one byte of it is believed. The body of a job
chunk is an ordinary TinyDB document ({"jobs": {"1": {...}, ...}}), and
`ChecksummedStorage` lets TinyDB itself open such a file (TinyDB's extension
point is the Storage class; see tinydb/storages.py). Writes are atomic
(atomic.py), so a reader sees the old file or the new one.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

from forgesyte.storage.atomic import atomic_write_bytes
from forgesyte.storage.errors import StateDamaged, UnknownFormat

HEADER_LIMIT = 512  # a header line is short; anything longer is not ours


def encode_document(fmt: str, version: int, body: Any) -> bytes:
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    header = {"format": fmt, "version": version, "length": len(data), "crc32": f"{zlib.crc32(data):08x}"}
    return json.dumps(header, separators=(",", ":")).encode("ascii") + b"\n" + data


def split_document(raw: bytes, name: str, fmt: str, version: int) -> tuple[dict[str, Any], bytes]:
    """(header, body bytes) once the header names `fmt` at `version` and the body verifies."""
    if not raw:
        raise StateDamaged(name, "is empty")
    newline = raw.find(b"\n", 0, HEADER_LIMIT)
    try:
        header = json.loads(raw[:newline]) if newline > 0 else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or "format" not in header:
        raise StateDamaged(name, "does not start with its ForgeSyte header")
    if header["format"] != fmt:
        raise StateDamaged(name, f"is a {header['format']!r} file where a {fmt!r} file belongs")
    if header.get("version") != version:
        raise UnknownFormat(name, f"has format version {header.get('version')!r} and this ForgeSyte "
                            f"reads version {version}")
    body = raw[newline + 1:]
    if len(body) != header.get("length"):
        raise StateDamaged(name, f"is truncated or padded ({len(body)} bytes where its header says "
                           f"{header.get('length')})")
    if f"{zlib.crc32(body):08x}" != header.get("crc32"):
        raise StateDamaged(name, "is damaged (checksum mismatch)")
    return header, body


def decode_document(raw: bytes, name: str, fmt: str, version: int) -> Any:
    _header, body = split_document(raw, name, fmt, version)
    try:
        return json.loads(body)
    except ValueError:  # a checksum over bytes we wrote ourselves: only a foreign writer gets here
        raise StateDamaged(name, "holds JSON that does not parse") from None


def read_raw(path: Path, name: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise StateDamaged(name, "is a directory, not a file") from None
    except OSError as exc:
        raise StateDamaged(name, f"cannot be read ({exc.strerror or exc})") from None


def read_document(path: Path, name: str, fmt: str, version: int) -> Any:
    """The verified body; FileNotFoundError is left to the caller (missing can be normal)."""
    return decode_document(read_raw(path, name), name, fmt, version)


def write_document(path: Path, fmt: str, version: int, body: Any) -> int:
    """Atomically write a checksummed document; returns the body's CRC-32."""
    data = encode_document(fmt, version, body)
    atomic_write_bytes(path, data)
    newline = data.index(b"\n")
    return zlib.crc32(data[newline + 1:])


def document_crc(path: Path, name: str, fmt: str, version: int) -> int:
    """Verify a document without parsing its JSON (cheap enough to check every chunk at start)."""
    _header, body = split_document(read_raw(path, name), name, fmt, version)
    return zlib.crc32(body)


def __getattr__(name: str) -> Any:
    """`ChecksummedStorage` is built on first use, so readers that never open a chunk
    through TinyDB itself do not pay for importing it (a CLI command must start fast)."""
    if name != "ChecksummedStorage":
        raise AttributeError(name)
    from tinydb.storages import Storage

    class ChecksummedStorage(Storage):
        """A TinyDB Storage over a checksummed document, e.g.
        ``TinyDB(path, storage=ChecksummedStorage, fmt="forgesyte-chunk", version=1)``."""

        def __init__(self, path: str, fmt: str, version: int, readonly: bool = False):
            self.path = Path(path)
            self.fmt, self.version, self.readonly = fmt, version, readonly

        def read(self) -> dict[str, Any] | None:
            try:
                return read_document(self.path, self.path.name, self.fmt, self.version)
            except FileNotFoundError:
                return None

        def write(self, data: dict[str, Any]) -> None:
            if self.readonly:
                raise PermissionError("This document was opened read-only.")
            write_document(self.path, self.fmt, self.version, data)

        def close(self) -> None:
            pass

    globals()["ChecksummedStorage"] = ChecksummedStorage
    return ChecksummedStorage


# Older name of the error a damaged state file raises (forgesyte.storage.errors).
from forgesyte.storage.errors import StateError as StoreCorrupt  # noqa: E402,F401
