"""TinyDB plumbing: an atomic JSON storage and a snapshot cache with explicit flush.

TinyDB's stock JSONStorage truncates and rewrites the file in place, so a
kill -9 mid-write leaves half a JSON document. AtomicJSONStorage replaces the
whole file atomically instead (forgesyte.storage.atomic).

Snapshot parses the file once per TinyDB instance, so every query of one CLI
command sees the same consistent snapshot (and TinyDB's per-instance query
cache can never serve data older than that snapshot: readers are short-lived).
For the writer it also defers writes until `flush()`, which is how the daemon
batches several transitions into one atomic file replacement.
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


class Snapshot(Middleware):
    """Read once; writes go to memory and reach the disk on flush()."""

    def __init__(self, storage_cls=AtomicJSONStorage):
        super().__init__(storage_cls)
        self._cache: dict[str, Any] | None = None
        self.dirty = False

    def read(self):
        if self._cache is None:
            self._cache = self.storage.read() or {}
        return self._cache

    def write(self, data):
        if getattr(self.storage, "readonly", False):
            raise PermissionError("This job store was opened read-only.")
        self._cache = data
        self.dirty = True

    def flush(self) -> bool:
        if not self.dirty:
            return False
        self.storage.write(self._cache)
        self.dirty = False
        return True

    def close(self):
        self.storage.close()


def open_tinydb(path: Path | str, readonly: bool = False) -> tuple[TinyDB, Snapshot]:
    if not readonly:
        os.makedirs(Path(path).parent, exist_ok=True)
    snapshot = Snapshot(AtomicJSONStorage)
    return TinyDB(str(path), storage=snapshot, readonly=readonly), snapshot
