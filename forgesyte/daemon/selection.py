"""Which inbox files become jobs: video extensions, minus ignore patterns.

Ignore patterns apply to every component of the key, so a file inside a
hidden folder (`.sync/clip.mp4`) or an rsync temp (`.clip.mp4.Ab12Cd`) is
never taken; it is taken under its final name once renamed.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Iterable


class Selection:
    def __init__(self, extensions: Iterable[str], ignore_patterns: Iterable[str]):
        self.update(extensions, ignore_patterns)

    def update(self, extensions: Iterable[str], ignore_patterns: Iterable[str]) -> None:
        """In place, so the watcher's handler sees a reload at once."""
        self.extensions = frozenset(e.lower().lstrip(".") for e in extensions)
        self.ignore = tuple(ignore_patterns)

    def ignored(self, name: str) -> bool:
        return any(fnmatchcase(name, pattern) for pattern in self.ignore)

    def wants(self, key: str) -> bool:
        parts = key.split("/")
        if any(self.ignored(part) for part in parts):
            return False
        name = parts[-1]
        stem, dot, ext = name.rpartition(".")
        return bool(dot and stem and ext.lower() in self.extensions)

    def wants_dir(self, key: str) -> bool:
        return not any(self.ignored(part) for part in key.split("/"))
