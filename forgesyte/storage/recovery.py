"""Recovery, in one place: what every state file should be, what a damaged one means,
and what may be done about it without losing anything.

`inspect` verifies every state file and returns findings, each naming its file
(relative to the state folder). Each finding is one of:

* auto: repairing it provably loses nothing, so the writer does it at open:
  a torn journal tail is cut (a flush that never completed; the bytes go to
  quarantine), derived data (the index; the fingerprint index of `similar`,
  which the daemon rebuilds from the results documents right after the open,
  `rebuild_fingerprints`) is rebuilt, files a committed manifest
  retired and temp files of interrupted writes are removed, files of a
  checkpoint that never committed are removed once every record in them is
  found, equal, in the committed state (otherwise they go to quarantine).
* blocking: the truth itself is damaged or missing (manifest, a chunk, the
  journal): carrying on could lose records or make a second job for an
  input. `JobStore` refuses to open for writing (`run` exits 3) and
  `forgesyte fsck --repair` rebuilds (rebuild.py).
* notice: worth saying, nothing to repair (e.g. a results document missing).

Nothing here deletes a file because another one looks older or missing.

(Longer than most modules, on purpose: every decision about a damaged state is
here, in one place, rather than spread over the modules that read the files.)
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgesyte.storage import chunks, fingerprints, journal, recordlog, requests
from forgesyte.storage.atomic import TMP_SUFFIX, fsync_dir
from forgesyte.storage.chunks import JOBS_DIR, MANIFEST, Manifest
from forgesyte.storage.errors import StateDamaged, StateError, UnknownFormat
from forgesyte.storage.events import CURRENT as EVENTS_CURRENT
from forgesyte.storage.events import EVENTS_DIR
from forgesyte.storage.events import FORMAT as EVENTS_FORMAT
from forgesyte.storage.events import PREVIOUS as EVENTS_PREVIOUS
from forgesyte.storage.events import VERSION as EVENTS_VERSION
from forgesyte.storage.ids import utc_now
from forgesyte.storage.index import INDEX_DIR, Index, IndexDamaged
from forgesyte.storage.snapshot import V1_FILE, Snapshot, journal_path, read_snapshot

log = logging.getLogger("forgesyte.storage")

QUARANTINE_DIR = "quarantine"
AUTO, BLOCKING, NOTICE = "auto", "blocking", "notice"


@dataclass
class Finding:
    name: str  # the file, relative to the state folder
    problem: str  # a few words: "is damaged (checksum mismatch)"
    kind: str  # AUTO, BLOCKING or NOTICE
    action: str = ""  # what a repair does about it

    def sentence(self) -> str:
        return f"{self.name} {self.problem}" + (f" ({self.action})" if self.action else "") + "."

    def as_json(self) -> dict[str, Any]:
        return {"file": self.name, "problem": self.problem, "kind": self.kind, "repair": self.action or None}


@dataclass
class Opened(Snapshot):
    journal_size: int = 0
    index: Index | None = None


@dataclass
class Inspection:
    findings: list[Finding] = field(default_factory=list)
    snapshot: Snapshot | None = None  # the committed state, when manifest and journal read
    fresh: bool = False  # no state at all yet
    index: Index | None = None  # the index as loaded and verified (the writer keeps it)

    def add(self, name: str, problem: str, kind: str, action: str = "") -> None:
        self.findings.append(Finding(name, problem, kind, action))

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.kind == BLOCKING]


# -- inspecting everything -------------------------------------------------------------------
def _listing(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []


def inspect(state_dir: Path | str, deep: bool = True, records: bool = True) -> Inspection:
    """Verify every state file. `deep`: every chunk's checksum too; `records`: and every
    record's content (fsck, doctor; the writer's open checks checksums only, and the
    records it acts on as it reads them). Never writes."""
    state_dir = Path(state_dir)
    result = Inspection()
    if (state_dir / V1_FILE).exists() and not (chunks.jobs_dir(state_dir) / MANIFEST).exists():
        result.add(V1_FILE, "is in the format of an earlier ForgeSyte", AUTO, "converted to this format; "
                   "the old files are kept in quarantine/")
        return result
    try:
        snap = read_snapshot(state_dir)
    except UnknownFormat as exc:
        result.add(exc.name, exc.problem, BLOCKING, "refused: not repaired by this version")
        return result
    except StateError as exc:
        result.add(exc.name, exc.problem, BLOCKING, "rebuilt from every readable record and the results documents")
        _inspect_orphans(state_dir, None, result)
        return result
    result.snapshot = snap
    manifest = snap.manifest
    result.fresh = manifest.gen == 0 and not manifest.chunks and not (
        chunks.jobs_dir(state_dir) / MANIFEST).exists()
    if snap.journal is not None:
        _inspect_journal_end(state_dir, snap, result)
    if deep:
        for entry in manifest.chunks:
            try:
                if records:
                    _check_records(chunks.rel(entry["name"]), chunks.read_chunk(state_dir, entry).values(),
                                   result)
                else:
                    _check_crc(state_dir, entry)
            except FileNotFoundError:
                result.add(chunks.rel(entry["name"]), "is named by the manifest but missing", BLOCKING,
                           "rebuilt from every readable record and the results documents")
            except UnknownFormat as exc:
                result.add(exc.name, exc.problem, BLOCKING, "refused: not repaired by this version")
            except StateError as exc:
                result.add(exc.name, exc.problem, BLOCKING,
                           "rebuilt from every readable record and the results documents")
        _check_records(chunks.rel(manifest.journal), snap.overlay.values(), result)
    _inspect_orphans(state_dir, manifest, result)
    if not result.blocking and not result.fresh:
        try:
            result.index = Index.load(state_dir, manifest.gen)
        except IndexDamaged as exc:
            result.add(exc.name, exc.problem, AUTO, "derived data: rebuilt from the job records")
    _inspect_events(state_dir, result, whole=records)
    problem = fingerprints.problem_of(state_dir, whole=records)
    if problem:
        result.add(fingerprints.REL, problem, AUTO, FINGERPRINTS_ACTION)
    _inspect_requests(state_dir, result)
    return result


FINGERPRINTS_ACTION = "derived data: moved to quarantine/ and rebuilt from the results documents"


def _check_crc(state_dir: Path, entry: dict[str, Any]) -> None:
    """A chunk verifies and is the version the manifest names, without parsing its JSON."""
    from forgesyte.storage.tinystore import document_crc

    name = chunks.rel(entry["name"])
    crc = document_crc(chunks.jobs_dir(state_dir) / entry["name"], name, chunks.CHUNK_FORMAT, chunks.VERSION)
    if f"{crc:08x}" != entry["crc32"]:
        raise StateDamaged(name, "is not the version of it that the manifest names (checksum differs)")


def _check_records(name: str, records, result: Inspection) -> None:
    """Records that verify by checksum but not by content (another writer's, or a bug's)."""
    for record in records:
        problem = invalid_record(record)
        if problem:
            job = record.get("id") if isinstance(record, dict) else None
            result.add(name, f"holds a job record{f' ({job})' if job else ''} that {problem}", BLOCKING,
                       "the record is repaired (an unknown status becomes failed, with a sentence) and "
                       "the file kept in quarantine/")
            return


def _inspect_journal_end(state_dir: Path, snap: Snapshot, result: Inspection) -> None:
    """A torn tail is a flush that never completed, unless the event log's mark says a
    later flush did complete: then the journal was cut by damage (records are lost)."""
    from forgesyte.storage.events import last_mark

    manifest, jnl = snap.manifest, snap.journal
    name = chunks.rel(manifest.journal)
    mark = last_mark(state_dir)
    if mark is not None and mark[0] == manifest.gen and mark[1] > snap.seq:
        result.add(name, f"ends at flush {snap.seq} but flush {mark[1]} was written (it was cut short)",
                   BLOCKING, "rebuilt from every readable record and the results documents")
    elif jnl.torn:
        result.add(name, "ends in a torn record (a flush that never completed)",
                   AUTO, "the torn bytes are cut off and kept in quarantine/")


def _inspect_orphans(state_dir: Path, manifest: Manifest | None, result: Inspection) -> None:
    """Files in jobs/ and index/ that the committed state does not account for."""
    named = set() if manifest is None else {e["name"] for e in manifest.chunks} | {manifest.journal, MANIFEST}
    retired = set() if manifest is None else set(manifest.retired)
    for folder in (JOBS_DIR, INDEX_DIR, EVENTS_DIR):
        for name in _listing(state_dir / folder):
            rel = f"{folder}/{name}"
            if name.startswith(".") and name.endswith(TMP_SUFFIX):
                result.add(rel, "is the temp file of an interrupted write", AUTO, "removed: never read")
            elif folder != JOBS_DIR or manifest is None or name in named:
                continue
            elif name in retired:
                result.add(rel, "was retired by the last checkpoint", AUTO, "removed: the manifest "
                           "names its replacement")
            elif (chunks.name_gen(name) or -1) > manifest.gen:
                result.add(rel, "belongs to a checkpoint that never completed", AUTO,
                           "removed if every record in it is in the committed state, else quarantined")
            else:
                result.add(rel, "is not part of the committed state", AUTO, "moved to quarantine/")


def _inspect_events(state_dir: Path, result: Inspection, whole: bool) -> None:
    """The header, and a torn tail; `whole`: every line's checksum (fsck). The writer's
    open looks at the last 64 KB only: the log is history, readers skip a bad line."""
    for name in (EVENTS_PREVIOUS, EVENTS_CURRENT):
        path = state_dir / EVENTS_DIR / name
        rel = f"{EVENTS_DIR}/{name}"
        try:
            first, raw, start = recordlog.head_and_tail(path, whole)
        except FileNotFoundError:
            continue
        except OSError as exc:
            result.add(rel, f"cannot be read ({exc.strerror or exc})", AUTO, "moved to quarantine/; a new log starts")
            continue
        if not first:
            continue
        try:
            recordlog.check_header(rel, recordlog.decode(first.rstrip(b"\n")) if first.endswith(b"\n") else None,
                                   EVENTS_FORMAT, EVENTS_VERSION)
        except UnknownFormat as exc:
            result.add(rel, exc.problem, AUTO, "moved to quarantine/; a new log starts")
            continue
        except StateDamaged:
            result.add(rel, "does not start with its header", AUTO, "moved to quarantine/; a new log starts")
            continue
        if start:  # begin at a line boundary
            raw = raw[raw.find(b"\n") + 1:]
        scan = recordlog.scan_all(raw, needle=b"\n")  # checksums only: no line contains a newline
        if scan.damaged_inside:
            result.add(rel, f"has {len(scan.damaged_lines)} damaged lines (readers skip them)", AUTO,
                       "copied to quarantine/; the good events are kept")
        elif scan.torn_tail:
            result.add(rel, "ends in a torn record", AUTO, "the torn bytes are cut off")


def _inspect_requests(state_dir: Path, result: Inspection) -> None:
    folder = state_dir / requests.REQUESTS_DIR
    for name in _listing(folder):
        path = folder / name
        if path.is_dir() or (name.endswith(".json") and not name.startswith(".") and not _loads(path)):
            result.add(f"{requests.REQUESTS_DIR}/{name}", "is not a request the daemon can read", AUTO, "moved to quarantine/")


def _loads(path: Path) -> bool:
    """A request the daemon can read (the check the mailbox makes before obeying one)."""
    try:
        with open(path, "rb") as fh:
            requests.decode_request(fh.read(), path.name)
    except (OSError, StateDamaged, UnknownFormat):
        return False
    return True


REQUIRED = {"id": str, "input": str, "status": str}
STATUS_VALUES = ("pending", "running", "completed", "failed", chunks.PRUNED)


def invalid_record(record: Any) -> str | None:
    """What is wrong with a job record, or None."""
    if not isinstance(record, dict):
        return "is not an object"
    for key, kind in REQUIRED.items():
        if not isinstance(record.get(key), kind):
            return f"lacks {key!r}"
    if record["status"] not in STATUS_VALUES:
        return f"has the unknown status {record['status']!r}"
    if record["status"] != chunks.PRUNED:
        for key in ("size", "attempts", "plugins", "sha256", "created_at"):
            if key not in record:
                return f"lacks {key!r}"
    return None


# -- quarantine ------------------------------------------------------------------------------
def quarantine(state_dir: Path, rel: str, reason: str, copy: bool = False, data: bytes | None = None) -> str:
    """Move (or copy) a state file to state/quarantine/, never overwriting; returns its new name."""
    folder = state_dir / QUARANTINE_DIR
    os.makedirs(folder, mode=0o750, exist_ok=True)
    stamp = utc_now().replace(":", "").replace("-", "")
    base = f"{stamp}-{rel.replace('/', '_')}"
    target, n = folder / base, 1
    while target.exists():
        n += 1
        target = folder / f"{base}.{n}"
    source = state_dir / rel
    if data is not None:
        with open(target, "wb") as fh:
            fh.write(data)
            os.fsync(fh.fileno())
    elif copy:
        shutil.copy2(source, target) if source.is_file() else shutil.copytree(source, target)
    else:
        os.replace(source, target)
        fsync_dir(source.parent)
    fsync_dir(folder)
    moved = f"{QUARANTINE_DIR}/{target.name}"
    log.warning("%s %s: %s to %s", rel, reason, "copied" if copy or data is not None else "moved", moved)
    return moved


def _remove(state_dir: Path, rel: str, why: str) -> None:
    try:
        (state_dir / rel).unlink()
        log.info("removed %s: %s", rel, why)
    except FileNotFoundError:
        pass


# -- the writer's open -----------------------------------------------------------------------
def open_writer(state_dir: Path) -> Opened:
    """Open for writing (the caller holds the state lock): do every repair that provably
    loses nothing, refuse (StateDamaged / UnknownFormat) when the truth is damaged."""
    os.makedirs(state_dir, mode=0o750, exist_ok=True)
    if (state_dir / V1_FILE).exists() and not (chunks.jobs_dir(state_dir) / MANIFEST).exists():
        from forgesyte.storage.migrate import migrate_v1

        migrate_v1(state_dir)
    found = inspect(state_dir, deep=True, records=False)
    for finding in found.blocking:
        if finding.action.startswith("refused"):
            raise UnknownFormat(finding.name, finding.problem)
        raise StateDamaged(finding.name, finding.problem)
    snap = found.snapshot
    assert snap is not None
    manifest = snap.manifest
    if found.fresh:
        os.makedirs(chunks.jobs_dir(state_dir), mode=0o750, exist_ok=True)
        journal.create(journal_path(state_dir, manifest), manifest.gen)
        chunks.write_manifest(state_dir, manifest)
        snap = read_snapshot(state_dir)
    damaged_index = []
    for finding in found.findings:
        if finding.name.startswith(f"{INDEX_DIR}/") and not finding.name.endswith(TMP_SUFFIX):
            damaged_index.append(finding.name)
        else:
            _auto_repair(state_dir, finding, snap)
    jnl = snap.journal
    if jnl is not None and jnl.torn:
        tail = journal.cut_tail(journal_path(state_dir, manifest), jnl)
        quarantine(state_dir, chunks.rel(manifest.journal) + ".torn", "had a torn last record", data=tail)
    journal_size = jnl.good_end if jnl is not None else 0
    index = None if damaged_index or found.fresh else found.index
    if index is None and not damaged_index:
        index = _load_index(state_dir, manifest.gen)
    if index is None:
        index = rebuild_index_now(state_dir, manifest, snap.overlay, damaged_index)
    for record in snap.overlay.values():
        index.note(record)  # the open journal is newer than anything the index logged
    return Opened(manifest, snap.overlay, snap.counts, snap.seq, snap.floor, jnl, journal_size, index)


def _load_index(state_dir: Path, gen: int) -> Index | None:
    try:
        return Index.load(state_dir, gen)
    except IndexDamaged as exc:
        log.warning("%s; rebuilding it from the job records", exc.args[0].split(";")[0])
        return None


def rebuild_index_now(state_dir: Path, manifest: Manifest, overlay: dict[str, dict[str, Any]],
                      damaged: list[str] = ()) -> Index:
    """Derived data, made again from every record (chunks + journal) and written whole.
    The index folder it replaces goes to quarantine/ as a whole (the damaged files and the
    ones that still verified alike): nothing is overwritten in place."""
    def records():
        for entry in manifest.chunks:
            merged = chunks.read_chunk(state_dir, entry)
            yield from merged.values()
        yield from overlay.values()
    index = Index.rebuild(state_dir, records())
    if os.path.lexists(state_dir / INDEX_DIR):
        why = (f"held damaged derived data ({', '.join(damaged)})" if damaged
               else "did not verify or did not cover the job store")
        quarantine(state_dir, INDEX_DIR, f"{why}; the index is rebuilt from the job records")
    index.compact(manifest.gen)
    log.warning("rebuilt the index from %d job records' inputs", len(index))
    return index


def _auto_repair(state_dir: Path, finding: Finding, snap: Snapshot) -> None:
    rel, problem = finding.name, finding.problem
    if problem.startswith("is the temp file") or problem.startswith("was retired"):
        _remove(state_dir, rel, problem)
    elif problem.startswith("belongs to a checkpoint"):
        if _redundant(state_dir, rel, snap):
            _remove(state_dir, rel, "a checkpoint that never completed; every record in it is committed")
        else:
            quarantine(state_dir, rel, "is from a checkpoint that never completed and holds records "
                       "the committed state does not")
    elif problem.startswith("is not part of the committed state") or rel.startswith("requests/"):
        quarantine(state_dir, rel, problem)
    elif rel.startswith(f"{EVENTS_DIR}/"):
        _repair_events(state_dir, rel, finding)
    # The fingerprint index (fingerprints.REL) needs the results documents: the daemon's
    # open (open_daemon_store) and `fsck --repair` rebuild it with rebuild_fingerprints.


def _redundant(state_dir: Path, rel: str, snap: Snapshot) -> bool:
    """Every record in this uncommitted chunk is in the committed state, equal."""
    from forgesyte.storage.tinystore import read_document

    name = rel.split("/", 1)[1]
    if not chunks.is_chunk_name(name):  # a new journal: redundant while it holds only its header
        try:
            return journal.read(state_dir / rel, rel, chunks.name_gen(name) or 0).batches == []
        except (StateError, OSError):
            return False
    try:
        body = read_document(state_dir / rel, rel, chunks.CHUNK_FORMAT, chunks.VERSION)
        records = chunks.chunk_records(body, rel)
    except (StateError, OSError):
        return False
    manifest = snap.manifest
    cache: dict[int, dict[str, dict[str, Any]]] = {}
    for job_id, record in records.items():
        current = snap.overlay.get(job_id)
        if current is None:
            index = manifest.chunk_index(job_id)
            if index is None:
                return False
            if index not in cache:
                cache[index] = chunks.read_chunk(state_dir, manifest.chunks[index])
            current = cache[index].get(job_id)
        if current != record:
            return False
    return True


def _repair_events(state_dir: Path, rel: str, finding: Finding) -> None:
    path = state_dir / rel
    if "torn" in finding.problem:
        raw = path.read_bytes()
        scan = recordlog.scan_all(raw)
        quarantine(state_dir, rel + ".torn", "had a torn last record", data=raw[scan.good_end:])
        with open(path, "r+b") as fh:
            fh.truncate(scan.good_end)
            os.fsync(fh.fileno())
    elif "damaged lines" in finding.problem:
        raw = path.read_bytes()
        quarantine(state_dir, rel, "has damaged lines", copy=True)
        good = recordlog.scan_all(raw).records
        from forgesyte.storage.atomic import atomic_write_bytes

        atomic_write_bytes(path, b"".join(recordlog.encode(r) for r in good))
    else:
        quarantine(state_dir, rel, finding.problem)


def open_daemon_store(state_dir: Path | str, output_dir: Path | str):
    """The daemon's JobStore (no autoflush), after the repairs that lose nothing.

    Raises StateError (`run` exits 3) when the state is damaged, and also when it is
    empty while the output folder holds results documents with job records: starting
    afresh would take every input again and forget that history, while
    `forgesyte fsck --repair` rebuilds the records from those documents."""
    from forgesyte.storage.jobs import JobStore

    state_dir = Path(state_dir)
    try:
        snap = None if (state_dir / V1_FILE).exists() else read_snapshot(state_dir)
    except StateError:
        snap = None  # JobStore's open names the damage
    if snap is not None and not snap.manifest.chunks and not snap.overlay:
        job_id = _first_results_record(Path(output_dir))
        if job_id is not None:
            raise StateDamaged(chunks.rel(MANIFEST), "holds no job records while the output folder holds "
                               f"results documents of earlier jobs (e.g. job {job_id}); to rebuild the "
                               "records from them")
    store = JobStore(state_dir, autoflush=False)
    problem = fingerprints.problem_of(state_dir, whole=False)
    if problem:
        from forgesyte.storage.results import ResultStore

        try:
            rebuild_fingerprints(state_dir, store.iter_status("completed"), ResultStore(output_dir), problem)
        except (OSError, StateError) as exc:  # `similar` reads the documents meanwhile; the job store stands
            log.warning("could not rebuild %s: %s", fingerprints.REL, exc)
    return store


def rebuild_fingerprints(state_dir: Path | str, jobs, results, problem: str | None = None) -> int:
    """Derived data, made again: the fingerprint index of `similar` from the results documents
    of `jobs` (completed ones; the others are skipped). The file it replaces, if there is one,
    is moved to quarantine/ first with a log line naming it and `problem`; it is never
    overwritten. Returns how many jobs the new index holds."""
    state_dir = Path(state_dir)
    path = fingerprints.index_path(state_dir)
    if os.path.lexists(path):
        quarantine(state_dir, fingerprints.REL, f"{problem or 'is replaced'}; it is derived data, "
                   "rebuilt from the results documents")
    entries = fingerprints.entries_from_results(jobs, results)
    fingerprints.write_index(state_dir, entries)
    (log.warning if problem else log.info)("rebuilt %s from the results documents (%d fingerprinted jobs)",
                                           fingerprints.REL, len(entries))
    return len(entries)


def _first_results_record(output_dir: Path) -> str | None:
    import json

    from forgesyte.storage.results import RESULTS_NAME

    for folder, _dirs, files in os.walk(output_dir):
        if RESULTS_NAME in files:
            try:
                with open(Path(folder) / RESULTS_NAME, "rb") as fh:
                    document = json.load(fh)
            except (OSError, ValueError):
                continue
            if isinstance(document, dict) and isinstance(document.get("job"), dict):
                return str(document.get("job_id"))
    return None
