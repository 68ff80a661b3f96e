"""TinyDB plumbing: an atomic JSON storage and a write-through cache.

TinyDB's stock JSONStorage truncates and rewrites the file in place, so a
kill -9 mid-write leaves half a JSON document. AtomicJSONStorage replaces the
whole file atomically instead (forgesyte.storage.atomic). WriteThroughCache
keeps the parsed document in memory for the single writer (the daemon), so a
read does not re-parse the file, while every write still reaches the disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.middlewares import Middleware
from tinydb.storages import Storage

from forgesyte.storage.atomic import atomic_write_bytes


class StoreCorrupt(Exception):
    """A state file exists but is not a TinyDB JSON document."""


class AtomicJSONStorage(Storage):
    def __init__(self, path: Path | str, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly

    def read(self) -> dict[str, Any] | None:
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return None
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise StoreCorrupt(f"State file {self.path} is not valid JSON ({exc}).") from None

    def write(self, data: dict[str, Any]) -> None:
        if self.readonly:
            raise PermissionError("This job store was opened read-only.")
        blob = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        atomic_write_bytes(self.path, blob)

    def close(self) -> None:
        pass


class WriteThroughCache(Middleware):
    """Reads come from memory after the first; writes go to memory and disk."""

    def __init__(self, storage_cls=AtomicJSONStorage):
        super().__init__(storage_cls)
        self._cache: dict[str, Any] | None = None

    def read(self):
        if self._cache is None:
            self._cache = self.storage.read()
        return self._cache

    def write(self, data):
        self.storage.write(data)
        self._cache = data

    def close(self):
        self.storage.close()


def open_tinydb(path: Path | str, readonly: bool = False) -> TinyDB:
    if readonly:
        return TinyDB(str(path), storage=AtomicJSONStorage, readonly=True)
    os.makedirs(Path(path).parent, exist_ok=True)
    return TinyDB(str(path), storage=WriteThroughCache(AtomicJSONStorage))
