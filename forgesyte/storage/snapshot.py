"""The committed state, as a reader sees it: the manifest and the journal that continues it.

A reader (every CLI query) takes this snapshot, then reads only the chunks its
query needs (view.py). The writer's open starts from the same snapshot and then
decides what a damaged state means (recovery.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgesyte.storage import chunks, journal
from forgesyte.storage.chunks import MANIFEST, Manifest
from forgesyte.storage.errors import StateDamaged, StateError

V1_FILE = "jobs.json"  # the layout before format versions: migrate.py converts it


class FirstLayout(StateError):
    """A state of the first layout (before format versions): the writer converts it."""

    def __init__(self) -> None:
        super().__init__(V1_FILE, "is in the format of an earlier ForgeSyte (before format versions)",
                         "start the daemon once, or run `forgesyte fsck --repair`, to convert it")


@dataclass
class Snapshot:
    manifest: Manifest
    overlay: dict[str, dict[str, Any]]
    counts: dict[str, int]
    seq: int = 0
    floor: str | None = None
    journal: journal.Journal | None = None


def journal_path(state_dir: Path, manifest: Manifest) -> Path:
    return chunks.jobs_dir(state_dir) / manifest.journal


def _snapshot(manifest: Manifest, jnl: journal.Journal) -> Snapshot:
    last = jnl.batches[-1] if jnl.batches else None
    floor = manifest.floor
    overlay = jnl.overlay
    for candidate in [last.get("floor") if last else None, *overlay]:
        if candidate and (floor is None or candidate > floor):
            floor = candidate
    return Snapshot(manifest, overlay, dict(last["counts"]) if last else dict(manifest.counts),
                    last["seq"] if last else manifest.seq, floor, jnl)


def check_no_manifest(state_dir: Path) -> None:
    """No manifest: a new state, an older format, or a lost manifest (raises for the last two)."""
    if (state_dir / V1_FILE).exists():
        raise FirstLayout()
    folder = chunks.jobs_dir(state_dir)
    try:
        names = [n for n in os.listdir(folder) if not n.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return
    if names:
        raise StateDamaged(chunks.rel(MANIFEST), "is missing while the jobs folder holds "
                           f"{len(names)} files")


def read_snapshot(state_dir: Path) -> Snapshot:
    """A reader's consistent view: the manifest and the journal that continues it.
    A torn journal tail is ignored (the writer cuts it at its next open)."""
    for _attempt in range(5):
        manifest = chunks.read_manifest(state_dir)
        if manifest is None:
            check_no_manifest(state_dir)
            return Snapshot(Manifest(), {}, {})
        name = chunks.rel(manifest.journal)
        try:
            jnl = journal.read(journal_path(state_dir, manifest), name, manifest.gen)
        except (FileNotFoundError, StateDamaged) as exc:
            again = chunks.read_manifest(state_dir)
            if again is not None and again.gen != manifest.gen:
                continue  # a checkpoint replaced the journal under us: take the new snapshot
            if isinstance(exc, FileNotFoundError):
                raise StateDamaged(name, "is missing") from None
            raise
        return _snapshot(manifest, jnl)
    raise StateDamaged(chunks.rel(MANIFEST), "keeps changing under this reader")
