"""The fingerprint index of `forgesyte similar`: its file format, verified like every state file.

    <state>/similar/fingerprints.log   checksummed records (recordlog.py):
        {"format": "forgesyte-fingerprints", "version": 1}      header
        {"job_id", "input", "interval_s", "hashes": [hex, ...]} one per job

It is derived data: every record comes from a results document (the
`fingerprint` section of a completed job), so when the file does not verify
(torn, garbled, emptied, or written by another version) it is moved to
quarantine/ and written again from those documents (recovery.rebuild_fingerprints).
The comparing lives in forgesyte/similar.py; this module only knows the file,
so that recovery (storage) can check and rebuild it without importing upwards.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from forgesyte.storage import recordlog
from forgesyte.storage.atomic import atomic_write_bytes
from forgesyte.storage.errors import StateDamaged, StateError

INDEX_DIR = "similar"
INDEX_FILE = "fingerprints.log"
REL = f"{INDEX_DIR}/{INDEX_FILE}"  # as fsck and every message name it
FORMAT = "forgesyte-fingerprints"
VERSION = 1
PLUGIN = "fingerprint"
HINT = "it is derived data, rebuilt from the results documents by the daemon or by `forgesyte fsck --repair`"


class IndexDamaged(StateDamaged):
    """The index is missing or does not verify; names the file relative to the state folder."""

    def __init__(self, problem: str):
        super().__init__(REL, problem, HINT)


def _check_header(record: dict[str, Any] | None) -> None:
    try:
        recordlog.check_header(REL, record, FORMAT, VERSION)
    except StateError as exc:
        raise IndexDamaged(exc.problem) from None


def index_path(state_dir: Path | str) -> Path:
    return Path(state_dir) / INDEX_DIR / INDEX_FILE


def problem_of(state_dir: Path | str, whole: bool = True) -> str | None:
    """What is wrong with the index file (a few words), or None when it verifies or does
    not exist (no fingerprinted job yet). `whole`: every line's checksum; otherwise the
    header and the last 64 KB (the daemon's start; the first append reads it all)."""
    path = index_path(state_dir)
    try:
        first, raw, start = recordlog.head_and_tail(path, whole)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    try:
        _check_header(recordlog.decode(first[:-1]) if first.endswith(b"\n") else None)
    except IndexDamaged as exc:
        return exc.problem
    if start:
        raw = raw[raw.find(b"\n") + 1:]
    scan = recordlog.scan_all(raw, needle=b"\n")  # checksums only: no line contains a newline
    if scan.damaged_lines:
        return (f"has {len(scan.damaged_lines)} damaged line{'' if len(scan.damaged_lines) == 1 else 's'} "
                "(a torn, garbled or foreign record)")
    return None


def read_index(state_dir: Path | str) -> list[dict[str, Any]]:
    """Every record of the index; IndexDamaged when it is missing, torn, garbled or another
    version's."""
    path = index_path(state_dir)
    if not path.exists():
        raise IndexDamaged("does not exist yet")
    try:
        records, good_end, size = recordlog.read(path)
    except OSError as exc:
        raise IndexDamaged(f"cannot be read ({exc.strerror or exc})") from None
    _check_header(records[0] if records else None)
    if good_end != size:
        raise IndexDamaged(f"is damaged at byte {good_end}")
    return [r for r in records[1:] if isinstance(r.get("hashes"), list) and "job_id" in r]


def entry_of(job: dict[str, Any], section: dict[str, Any]) -> dict[str, Any] | None:
    """An index record for a job from its fingerprint section (None if it has no hashes)."""
    hashes = section.get("hashes") if isinstance(section, dict) else None
    if not isinstance(hashes, list) or not hashes:
        return None
    return {"job_id": job["id"], "input": job["input"], "interval_s": section.get("interval_s"),
            "hashes": [str(h) for h in hashes]}


def entries_from_results(jobs: Iterable[dict[str, Any]], results) -> list[dict[str, Any]]:
    """Index records rebuilt from the results documents of these (completed) jobs."""
    found = []
    for job in jobs:
        if job.get("status") != "completed" or PLUGIN not in (job.get("plugins") or []) or not job.get("output"):
            continue
        try:
            document = results.read(job["output"])
        except Exception:  # a missing or unreadable document: that job has no fingerprint here
            continue
        entry = entry_of(job, (document.get("plugins") or {}).get(PLUGIN, {}))
        if entry:
            found.append(entry)
    return found


def write_index(state_dir: Path | str, entries: list[dict[str, Any]]) -> None:
    """Write the whole index atomically (every byte checked, fsync, rename)."""
    path = index_path(state_dir)
    os.makedirs(path.parent, mode=0o750, exist_ok=True)
    header = {"format": FORMAT, "version": VERSION}
    atomic_write_bytes(path, b"".join(recordlog.encode(r) for r in [header, *entries]))


def append(state_dir: Path | str, entries: list[dict[str, Any]]) -> None:
    if entries:
        recordlog.append(index_path(state_dir), entries)
