"""`forgesyte fsck` and `forgesyte doctor`: check the state against itself and the output
folder, and rebuild it.

The check (`check`, and `stable_check` next to a running daemon, which both
commands call) is recovery.inspect (every state file, the fingerprint index
of `similar` included) plus the output folder: each
results document carries its job's record (results.finished_record), so a
document whose job the store does not know, or knows only in an older
revision, is a record the store lost.

The rebuild gathers every version of every job record that still verifies,
from everywhere: the committed chunks and journal, every other chunk or
journal file in jobs/ (even retired or uncommitted ones), and the results
documents. For each job it keeps the version with the highest `rev` (every
transition bumps it, so the newest version wins wherever it was found; on a
tie the store's copy). Records that fail validation are repaired (an unknown
status becomes `failed` with a sentence saying so). Then it writes a complete
new store (new chunk names, a new generation; the manifest last) and only
after that commit moves the old files out: every file the rebuild replaces
was first copied to state/quarantine/<time>-fsck/. Nothing is deleted.
Pending work whose record was lost is rebuilt from the inbox by the daemon's
scan at start (the index, rebuilt from the records, knows every input that
has a job, so nothing is taken twice).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from forgesyte.storage import chunks, fingerprints, journal, recordlog
from forgesyte.storage.atomic import fsync_dir
from forgesyte.storage.chunks import CHUNK_SIZE, JOBS_DIR, PRUNED, Manifest, count_statuses
from forgesyte.storage.errors import StateError
from forgesyte.storage.index import INDEX_DIR, Index
from forgesyte.storage.recovery import (
    AUTO, BLOCKING, NOTICE, QUARANTINE_DIR, Finding, inspect, invalid_record, open_writer, rebuild_fingerprints,
)
from forgesyte.storage.results import RESULTS_NAME
from forgesyte.storage.tinystore import read_document

log = logging.getLogger("forgesyte.storage")

# Where a version of a record came from; on equal `rev`, the higher wins.
FROM_RESULTS, FROM_OLD_FILE, FROM_CHUNK, FROM_JOURNAL = 0, 1, 2, 3


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    records: int = 0
    restored: int = 0  # records taken from results documents during a rebuild
    repaired: bool = False
    quarantined: list[str] = field(default_factory=list)
    after: "Report | None" = None  # the check after a repair

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.kind != NOTICE]

    @property
    def healthy(self) -> bool:
        return not self.problems


def results_documents(output_dir: Path) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """(key relative to the output folder, document or None if unreadable) of every
    results document under the output folder."""
    for folder, _dirs, files in os.walk(output_dir):
        if RESULTS_NAME in files:
            path = Path(folder) / RESULTS_NAME
            key = path.relative_to(output_dir).as_posix()
            try:
                with open(path, "rb") as fh:
                    document = json.load(fh)
            except (OSError, ValueError):
                yield key, None
                continue
            yield key, document if isinstance(document, dict) else None


def _document_record(key: str, document: dict[str, Any]) -> dict[str, Any] | None:
    record = document.get("job")
    if not isinstance(record, dict) or record.get("id") != document.get("job_id"):
        return None
    return {**record, "output": record.get("output") or key}


# -- checking -----------------------------------------------------------------------------
def check(state_dir: Path, output_dir: Path | None) -> Report:
    found = inspect(state_dir, deep=True)
    report = Report(findings=list(found.findings))
    if found.snapshot is None or output_dir is None or not Path(output_dir).is_dir():
        return report
    from forgesyte.storage.jobs import JobStore

    try:
        store = JobStore(state_dir, readonly=True)
        report.records = sum(store.counts().values())
    except StateError:
        return report  # already among the findings of inspect
    for key, document in results_documents(Path(output_dir)):
        if document is None:
            report.findings.append(Finding(f"(output) {key}", "is not a readable results document", NOTICE))
            continue
        record = _document_record(key, document)
        if record is None:
            continue  # written before documents carried records: nothing to compare
        try:
            stored = store._retrying(lambda job_id=record["id"]: store._stored(job_id))
        except StateError:
            continue  # in a damaged chunk: that chunk is a finding already
        if stored is None:
            report.findings.append(Finding(f"(output) {key}", f"belongs to job {record['id']}, which the "
                                           "store has no record of", BLOCKING, "the record is restored from it"))
        elif stored.get("status") != PRUNED and stored.get("rev", 0) < record.get("rev", -1):
            report.findings.append(Finding(f"(output) {key}", f"is newer than the store's record of job "
                                           f"{record['id']} ({stored['status']})", AUTO,
                                           "the record is updated from it"))
    try:
        for job in store.newest(None):
            if job["status"] in ("completed", "failed") and job.get("output"):
                if not (Path(output_dir) / job["output"]).is_file():
                    report.findings.append(Finding(f"(output) {job['output']}", f"is missing (job {job['id']}, "
                                                   f"{job['status']})", NOTICE))
    except StateError:
        pass  # a damaged chunk: among the findings of inspect
    return report


def stable_check(state_dir: Path, output_dir: Path | None, daemon_running: bool) -> Report:
    """`check`, for fsck and doctor alike. With a daemon writing, a check can catch it
    mid-append or mid-checkpoint: a problem counts only if it is still there when looked
    at again."""
    report = check(state_dir, output_dir)
    for _ in range(3 if daemon_running else 0):
        if not report.problems:
            break
        again = check(state_dir, output_dir)
        seen = {(f.name, f.problem) for f in again.problems}
        report.findings = [f for f in report.findings if f.kind == NOTICE or (f.name, f.problem) in seen]
    return report


DOCTOR_LINES = 10  # per kind; `forgesyte fsck` lists every one


def health(state_dir: Path | str, output_dir: Path | str | None,
           daemon_running: bool = False) -> list[tuple[str, str, str]]:
    """For `doctor`: (level "ok"/"warn"/"fail", what, fix), from the very check `forgesyte
    fsck` makes (stable_check: every state file, the fingerprint index, the output folder)."""
    state_dir = Path(state_dir)
    if not state_dir.is_dir():
        return []
    report = stable_check(state_dir, Path(output_dir) if output_dir is not None else None, daemon_running)
    fixes = {
        BLOCKING: ("fail", "Stop the daemon and run `forgesyte fsck --repair` (damaged files go to "
                           "state/quarantine/; nothing is deleted)."),
        AUTO: ("warn", "The daemon repairs this by itself when it starts (or run `forgesyte fsck --repair`)."),
        NOTICE: ("warn", "Nothing to repair; `forgesyte fsck` lists every such note."),
    }
    checks = []
    for kind in (BLOCKING, AUTO, NOTICE):
        found = [f for f in report.findings if f.kind == kind]
        level, fix = fixes[kind]
        for finding in found[:DOCTOR_LINES]:
            name = finding.name if finding.name.startswith("(output)") else f"state: {finding.name}"
            checks.append((level, f"{name} {finding.problem}" + (f" ({finding.action})" if finding.action else "")
                           + ".", fix))
        if len(found) > DOCTOR_LINES:
            checks.append((level, f"... and {len(found) - DOCTOR_LINES} more like these", "Run `forgesyte fsck`."))
    if not report.problems:
        checks.append(("ok", f"state files verify (format version {chunks.VERSION}; {report.records} job records)"
                       + (", and agree with the output folder" if output_dir is not None
                          and Path(output_dir).is_dir() else ""), ""))
    return checks


# -- rebuilding ---------------------------------------------------------------------------
class _Versions:
    """The best version of each record seen so far."""

    def __init__(self) -> None:
        self.best: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}

    def offer(self, record: Any, source: int) -> None:
        if not isinstance(record, dict) or not isinstance(record.get("id"), str) or not record.get("id"):
            return
        rank = (int(record.get("rev", 0) or 0) if isinstance(record.get("rev", 0), int) else 0, source)
        current = self.best.get(record["id"])
        if current is None or rank > current[0]:
            self.best[record["id"]] = (rank, record)

    def sources(self) -> dict[str, int]:
        return {job_id: rank[1] for job_id, (rank, _r) in self.best.items()}


def _journal_lines(path: Path) -> list[dict[str, Any]]:
    """Every batch that verifies, even past a damaged line."""
    try:
        raw = path.read_bytes()
    except OSError:
        return []
    records = recordlog.scan_all(raw).records
    return [r for r in records if isinstance(r.get("put"), list)]


def _chunk_file(path: Path, name: str) -> list[dict[str, Any]]:
    try:
        body = read_document(path, name, chunks.CHUNK_FORMAT, chunks.VERSION)
        return list(chunks.chunk_records(body, name).values())
    except (StateError, OSError):
        return []


def gather(state_dir: Path, output_dir: Path | None) -> tuple[_Versions, int]:
    """Every verifiable version of every record; and the highest generation seen."""
    versions = _Versions()
    folder = chunks.jobs_dir(state_dir)
    top_gen = 0
    committed: set[str] = set()
    try:
        manifest = chunks.read_manifest(state_dir)
    except StateError:
        manifest = None
    if manifest is not None:
        top_gen = manifest.gen
        committed = {e["name"] for e in manifest.chunks} | {manifest.journal}
    for name in sorted(os.listdir(folder)) if folder.is_dir() else ():
        path = folder / name
        top_gen = max(top_gen, chunks.name_gen(name) or 0)
        if chunks.is_chunk_name(name):
            source = FROM_CHUNK if name in committed else FROM_OLD_FILE
            for record in _chunk_file(path, chunks.rel(name)):
                versions.offer(record, source)
        elif name.startswith("journal.") and name.endswith(".log"):
            source = FROM_JOURNAL if name in committed else FROM_OLD_FILE
            for batch in _journal_lines(path):
                for record in batch["put"]:
                    versions.offer(record, source)
    if output_dir is not None and Path(output_dir).is_dir():
        for key, document in results_documents(Path(output_dir)):
            record = _document_record(key, document) if document else None
            if record is not None:
                versions.offer(record, FROM_RESULTS)
    return versions, top_gen


def normalize(record: dict[str, Any]) -> dict[str, Any] | None:
    """A record every reader can use, or None when it cannot be one: no id or input, or
    a pending or running job whose facts are broken (acting on a wrong size or hash would
    loop; its input is taken from the inbox again, as a new job, and the broken record
    stays in the quarantined copy)."""
    problem = invalid_record(record)
    if problem is None:
        return record
    if not isinstance(record.get("id"), str) or not isinstance(record.get("input"), str):
        return None
    if record.get("status") in ("pending", "running"):
        log.warning("the record of %s job %s %s; dropped, so its input is taken from the inbox again",
                    record["status"], record["id"], problem)
        return None
    fixed = {"status": "failed", "output": None, "plugins": [], "attempts": 0, "progress": 0,
             "size": 0, "mtime_ns": 0, "sha256": "", "duplicate_of": None, "created_at": None,
             "started_at": None, "finished_at": None, **record}
    if fixed["status"] not in ("completed", "failed", PRUNED):
        complete = all(k in record for k in ("size", "sha256", "plugins"))
        fixed["error"] = (f"Recovered by fsck: the record had the unknown status {fixed['status']!r}."
                          + (" Retry the job to run it again." if complete else ""))
        fixed["status"] = "failed"
    fixed.setdefault("error", None)
    fixed["rev"] = int(fixed.get("rev", 0) or 0) + 1
    return fixed


def write_store(state_dir: Path, records: list[dict[str, Any]], gen: int) -> Manifest:
    """A complete new store from records (sorted by id): chunks, index, journal, then the
    manifest that commits them. For the format conversion and for `fsck --repair`."""
    os.makedirs(chunks.jobs_dir(state_dir), mode=0o750, exist_ok=True)
    entries = [chunks.write_chunk(state_dir, records[i:i + CHUNK_SIZE], gen)
               for i in range(0, len(records), CHUNK_SIZE)]
    index = Index.rebuild(state_dir, records)
    index.compact(gen)
    name = chunks.journal_name(gen)
    journal.create(chunks.jobs_dir(state_dir) / name, gen)
    counts = {k: v for k, v in count_statuses(records).items() if k != PRUNED}
    floor = max((r["id"] for r in records), default=None)
    manifest = Manifest(gen=gen, seq=0, floor=floor, journal=name, chunks=entries, retired=[], counts=counts)
    chunks.write_manifest(state_dir, manifest)
    return manifest


def _stamp() -> str:
    from forgesyte.storage.ids import utc_now

    return utc_now().replace(":", "").replace("-", "")


def repair(state_dir: Path, output_dir: Path | None) -> Report:
    """Make the state whole again (the caller holds the state lock). Never deletes:
    whatever it replaces is in quarantine/ first."""
    state_dir = Path(state_dir)
    before = check(state_dir, output_dir)
    if any(f.kind == BLOCKING and "refused" in f.action for f in before.findings):
        return before  # another version's state: not ours to rewrite
    if not before.problems:
        return before
    blocking = [f for f in before.problems if f.kind == BLOCKING]
    report = Report(findings=before.findings)
    if blocking or any(f.name.startswith("(output)") for f in before.problems):
        if (state_dir / "jobs.json").exists() and not (chunks.jobs_dir(state_dir) / chunks.MANIFEST).exists():
            open_writer(state_dir)  # converts the earlier format first
        report.quarantined.append(_copy_aside(state_dir))
        versions, top_gen = gather(state_dir, output_dir)
        records = [fixed for _id, (_rank, record) in sorted(versions.best.items())
                   if (fixed := normalize(dict(record))) is not None]
        report.restored = sum(1 for s in versions.sources().values() if s == FROM_RESULTS)
        _replace_store(state_dir, records, top_gen + 1)
        log.warning("rebuilt the job store: %d records (%d from results documents)", len(records),
                    report.restored)
    try:
        open_writer(state_dir)  # what is left is what the writer repairs by itself
    except StateError as exc:
        log.error("%s", exc)
    else:
        _repair_fingerprints(state_dir, output_dir)
    report.after = check(state_dir, output_dir)
    report.records = report.after.records
    report.repaired = not report.after.problems
    return report


def _repair_fingerprints(state_dir: Path, output_dir: Path | None) -> None:
    """The fingerprint index, rebuilt (the old file to quarantine/) from the results
    documents of the now whole store, as the daemon does at start."""
    problem = fingerprints.problem_of(state_dir, whole=True)
    if problem is None or output_dir is None or not Path(output_dir).is_dir():
        return  # healthy; or no output folder to rebuild it from: it stays named
    from forgesyte.storage.jobs import JobStore
    from forgesyte.storage.results import ResultStore

    rebuild_fingerprints(state_dir, JobStore(state_dir, readonly=True).iter_status("completed"),
                         ResultStore(output_dir), problem)


def _copy_aside(state_dir: Path) -> str:
    """Copy jobs/ and index/ to quarantine/<time>-fsck/ before anything is replaced."""
    target = state_dir / QUARANTINE_DIR / f"{_stamp()}-fsck"
    os.makedirs(target, mode=0o750, exist_ok=True)
    for folder in (JOBS_DIR, INDEX_DIR):
        if (state_dir / folder).is_dir():
            shutil.copytree(state_dir / folder, target / folder, dirs_exist_ok=True)
    for path in target.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    fsync_dir(target)
    log.warning("copied jobs/ and index/ to %s before rebuilding", target.relative_to(state_dir))
    return target.relative_to(state_dir).as_posix()


def _replace_store(state_dir: Path, records: list[dict[str, Any]], gen: int) -> Manifest:
    folder = chunks.jobs_dir(state_dir)
    old = set(os.listdir(folder)) if folder.is_dir() else set()
    os.makedirs(state_dir / INDEX_DIR, exist_ok=True)
    old_index = set(os.listdir(state_dir / INDEX_DIR))
    for path in (folder, state_dir / INDEX_DIR):  # not a directory (garbage in its place)?
        if path.exists() and not path.is_dir():
            os.replace(path, state_dir / QUARANTINE_DIR / f"{_stamp()}-{path.name}")
    manifest = write_store(state_dir, records, gen)
    new = {e["name"] for e in manifest.chunks} | {manifest.journal, chunks.MANIFEST}
    for name in old - new:  # copied to quarantine already
        target = folder / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    from forgesyte.storage.index import BUCKETS, LOG, bucket_name

    current = {bucket_name(n) for n in range(BUCKETS)} | {LOG}
    for name in old_index - current:
        target = state_dir / INDEX_DIR / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    fsync_dir(folder)
    return manifest
