"""Finished jobs, sealed into bounded, immutable TinyDB segments.

    <state>/archive/<name>.json      a TinyDB file of SEGMENT_SIZE finished jobs
    <state>/archive/manifest.json    which segments exist, each stamped with generations

A segment is written once (atomically, fsync'd) and never edited in place:
`retry` and `prune` write a new segment under a new name and retire the old
one. Every manifest entry carries the generation of the active file that
made it visible (`gen`) and, once replaced, the generation that retired it
(`retired`). A reader uses exactly the entries visible at its snapshot's
generation, so a seal or replacement is atomic for readers even though it
spans several files. See docs/storage.md.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from forgesyte.storage.atomic import atomic_write_bytes, atomic_write_json

SEGMENT_SIZE = 250
ARCHIVE_DIR = "archive"
MANIFEST = "manifest.json"

def visible(entry: dict[str, Any], gen: int) -> bool:
    return entry["gen"] <= gen and (entry.get("retired") is None or entry["retired"] > gen)


class Archive:
    def __init__(self, state_dir: Path | str):
        self.dir = Path(state_dir) / ARCHIVE_DIR

    # -- segments -------------------------------------------------------------
    def write_segment(self, jobs: list[dict[str, Any]], gen: int) -> dict[str, Any]:
        """Write a new sealed segment; returns its manifest entry (visible from `gen`)."""
        os.makedirs(self.dir, mode=0o750, exist_ok=True)
        ordered = sorted(jobs, key=lambda j: j["id"])
        name = f"{ordered[0]['id']}-{secrets.token_hex(3)}"
        table = {str(i + 1): job for i, job in enumerate(ordered)}
        blob = json.dumps({"jobs": table}, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        atomic_write_bytes(self.dir / f"{name}.json", blob)
        counts: dict[str, int] = {}
        for job in jobs:
            counts[job["status"]] = counts.get(job["status"], 0) + 1
        return {"name": name, "min_id": ordered[0]["id"], "max_id": ordered[-1]["id"],
                "count": len(jobs), "counts": counts, "gen": gen, "retired": None,
                "oldest_finish": min(j["finished_at"] or "" for j in jobs)}

    def read_segment(self, name: str) -> list[dict[str, Any]]:
        """Raises FileNotFoundError if a writer removed it after the caller's snapshot."""
        with open(self.dir / f"{name}.json", "rb") as fh:
            return list(json.load(fh).get("jobs", {}).values())

    def remove_segment(self, name: str) -> None:
        try:
            os.unlink(self.dir / f"{name}.json")
        except FileNotFoundError:
            pass

    def segment_names_on_disk(self) -> set[str]:
        try:
            return {p.name[:-5] for p in os.scandir(self.dir) if p.name.endswith(".json")
                    and not p.name.startswith(".") and p.name != MANIFEST}
        except FileNotFoundError:
            return set()

    def read_manifest(self) -> list[dict[str, Any]]:
        try:
            with open(self.dir / MANIFEST, "rb") as fh:
                return json.load(fh)["segments"]
        except FileNotFoundError:
            return []

    def write_manifest(self, entries: list[dict[str, Any]]) -> None:
        os.makedirs(self.dir, mode=0o750, exist_ok=True)
        atomic_write_json(self.dir / MANIFEST, {"segments": entries}, indent=None)
