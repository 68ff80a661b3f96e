"""The only place where a relative key becomes an absolute path, or back.

The database stores keys such as ``cam1/clip.mp4``: relative to a root fixed
at start, always with ``/`` separators. Resolving a key refuses anything that
would leave the root: an absolute key, ``..`` components, or a symlink whose
target lies outside. That one rule is what keeps results reachable after the
home moves, and keeps a hostile file name from writing outside the output.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath


class UnsafeKey(ValueError):
    """A key (or path) that would leave its root."""


class Root:
    """An absolute directory plus the key <-> path conversions under it."""

    def __init__(self, path: Path | str):
        self.path = Path(os.path.abspath(path))

    def __repr__(self) -> str:
        return f"Root({str(self.path)!r})"

    def _real(self) -> str:
        # Recomputed on use: the root may be a mount point that comes and goes.
        return os.path.realpath(self.path)

    def _inside(self, candidate: str) -> bool:
        real_root = self._real()
        real = os.path.realpath(candidate)
        return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)

    @staticmethod
    def check_key(key: str) -> PurePosixPath:
        if not isinstance(key, str) or not key or "\x00" in key:
            raise UnsafeKey(f"{key!r} is not a valid key.")
        if key.startswith("/") or (len(key) > 1 and key[1] == ":"):
            raise UnsafeKey(f"Key {key!r} is absolute; keys are relative to their root.")
        parts = key.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise UnsafeKey(f"Key {key!r} has an empty, '.' or '..' component.")
        return PurePosixPath(key)

    def path_for(self, key: str) -> Path:
        """Absolute path of `key`; raises UnsafeKey if it would leave the root."""
        rel = self.check_key(key)
        path = self.path.joinpath(*rel.parts)
        if not self._inside(str(path)):
            raise UnsafeKey(f"Key {key!r} leads outside {self.path} through a symlink.")
        return path

    def key_for(self, path: Path | str) -> str:
        """Relative key of an absolute path under the root; raises UnsafeKey otherwise."""
        path = os.path.abspath(path)
        rel = os.path.relpath(path, self.path)
        if rel == "." or rel.startswith(".." + os.sep) or rel == ".." or os.path.isabs(rel):
            raise UnsafeKey(f"{path} is not inside {self.path}.")
        key = rel.replace(os.sep, "/")
        self.path_for(key)  # symlink escape check
        return key
