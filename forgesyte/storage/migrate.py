"""Converting a state written before format versions (ForgeSyte 0.1's first layout).

    <state>/jobs.json                 TinyDB: active jobs + {"meta": {"1": {"gen": G}}}
    <state>/archive/manifest.json     sealed segments, visible at generation G
    <state>/archive/<name>.json       TinyDB segments of finished jobs
    <state>/index/NN.json, log.jsonl  input -> newest job (pruned ones included)

Every job visible at the active file's generation becomes a record of the new
store; an input the old index remembers but no record holds (a pruned job)
becomes a tombstone, so it is still not taken again. The new files are
committed first (the manifest last); only then do the old ones move to
state/quarantine/ (never deleted).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from forgesyte.storage import chunks
from forgesyte.storage.chunks import PRUNED
from forgesyte.storage.errors import StateDamaged

log = logging.getLogger("forgesyte.storage")
OLD_FILES = ("jobs.json", "archive", "index")


def _load(path: Path, name: str) -> Any:
    try:
        with open(path, "rb") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateDamaged(name, f"cannot be converted from the earlier format ({exc})") from None


def read_v1(state_dir: Path) -> list[dict[str, Any]]:
    """Every record the old layout shows a reader, plus tombstones from its index."""
    active = _load(state_dir / "jobs.json", "jobs.json") or {}
    meta = list((active.get("meta") or {}).values())
    gen = meta[0].get("gen", 0) if meta else 0
    records: dict[str, dict[str, Any]] = {}
    manifest = _load(state_dir / "archive" / "manifest.json", "archive/manifest.json") or {"segments": []}
    for entry in manifest.get("segments", []):
        visible = entry["gen"] <= gen and (entry.get("retired") is None or entry["retired"] > gen)
        if visible:
            name = f"archive/{entry['name']}.json"
            segment = _load(state_dir / name, name)
            if segment is None:
                raise StateDamaged(name, "is named by the old manifest but missing")
            for job in segment.get("jobs", {}).values():
                records[job["id"]] = job
    for job in (active.get("jobs") or {}).values():
        records[job["id"]] = job
    for job in records.values():
        job.setdefault("rev", 1)
    for entry in _old_index_entries(state_dir):
        job_id, size, mtime_ns, sha, original = entry["e"]
        if job_id not in records:
            records[job_id] = {"id": job_id, "input": entry["i"], "size": size, "mtime_ns": mtime_ns,
                               "sha256": sha, "duplicate_of": None if original == job_id else original,
                               "status": PRUNED, "rev": 1, "created_at": None, "finished_at": None}
    return sorted(records.values(), key=lambda r: r["id"])


def _old_index_entries(state_dir: Path) -> list[dict[str, Any]]:
    folder = state_dir / "index"
    found: list[dict[str, Any]] = []
    for number in range(64):
        bucket = _load(folder / f"{number:02d}.json", f"index/{number:02d}.json") or {}
        found.extend({"i": key, "e": entry} for key, entry in bucket.get("inputs", {}).items())
    try:
        with open(folder / "log.jsonl", encoding="utf-8") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if "i" in record:
                    found.append(record)
    except FileNotFoundError:
        pass
    return found


def migrate_v1(state_dir: Path) -> None:
    from forgesyte.storage.rebuild import write_store
    from forgesyte.storage.recovery import quarantine

    records = read_v1(state_dir)
    staged = state_dir / ".index-v1"
    if (state_dir / "index").exists() and not staged.exists():
        os.replace(state_dir / "index", staged)  # the new index takes its place
    write_store(state_dir, records, 1)
    for name in OLD_FILES:
        source = ".index-v1" if name == "index" else name
        if (state_dir / source).exists():
            quarantine(state_dir, source, "was converted to the new format")
    log.warning("converted the state to format version %d: %d job records", chunks.VERSION, len(records))
