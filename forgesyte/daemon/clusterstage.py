"""Where a cluster attempt writes, and how the accepted attempt's files get into place.

A worker cut off from the cluster (a network partition, a frozen host) may
finish a stale attempt long after the daemon gave up on it and ran the job
again elsewhere. Nothing that stale attempt writes may change what the
current attempt owns: not the results document, not an artifact.

Why staging, decided by the daemon (and not a check made by the worker):
a worker can only ask "has a later attempt started?" and then write, and a
later attempt can start between the question and the write, so a fence kept
by the workers always leaves a window (there was one in the old
`FencedResults.write`). The daemon, in contrast, is the one place that
decides which attempt is current (it hands out the attempt tokens and keeps
one flight per job), and it does so on one thread. So:

* every cluster attempt writes through a `ResultStore` rooted in a folder of
  its own, `<output>/.forgesyte-cluster/attempts/<job>.<run>/`, under the
  very keys the job will have (`<folder>/<plugin>/<file>`; the document as
  `<folder>/results.staged.json`, a name that no rebuild or fsck takes for a
  results document). A stale attempt therefore writes only into its own
  folder, which nobody reads; it is removed later.
* when the daemon accepts an attempt's outcome (the first answer of the
  job's current flight, cluster.py), it moves that attempt's files into the
  job's folder with renames on the same file system, the document last
  (`os.replace`: readers see the old document or the new one). Nothing else
  ever moves a staged file into place, so there is nothing to race with.

Keys do not change: artifacts are listed in the plugin's section by the same
relative keys a local worker would record, and the job folder looks the same.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from forgesyte.config import DIR_MODE
from forgesyte.daemon.clustermarker import MARKER_DIR
from forgesyte.storage.atomic import atomic_write_json, fsync_dir
from forgesyte.storage.paths import Root
from forgesyte.storage.results import RESULTS_NAME, ResultStore

ATTEMPTS = "attempts"
TRASH = "trash"
STAGED_NAME = "results.staged.json"


def attempt_root(output: Path | str, job_id: str, run: int) -> Path:
    return Path(output) / MARKER_DIR / ATTEMPTS / f"{job_id}.{int(run)}"


class StagedResults(ResultStore):
    """The result store of one cluster attempt: rooted in its attempt folder, so every
    write of the chain (artifacts, the document, the cleanup after a full disk) stays
    there; `write` returns the key the document will have once it is in place."""

    def write(self, folder_key: str, document: dict) -> str:
        self.job_folder(folder_key)
        atomic_write_json(self.root.path_for(f"{folder_key}/{STAGED_NAME}"), document)
        return self.results_key(folder_key)


def staged_results(output: Path | str, job_id: str, run: int) -> StagedResults:
    return StagedResults(attempt_root(output, job_id, run))


def publish(output: Path | str, job_id: str, run: int, folder_key: str) -> bool:
    """The daemon, accepting attempt `run`: move its staged files into the job's folder.
    False when the attempt staged no document (nothing moved). Raises OSError (a full
    or read-only output folder) with the job's folder unchanged or partly replaced but
    always with a complete results document of one attempt."""
    out = Root(output)
    source = Root(attempt_root(output, job_id, run)).path_for(folder_key)
    if not (source / STAGED_NAME).is_file():
        return False
    target = out.path_for(folder_key)
    if not os.path.lexists(target):  # the usual case: the whole folder in one rename
        os.makedirs(target.parent, mode=DIR_MODE, exist_ok=True)
        os.rename(source, target)
        document = target / STAGED_NAME
    else:  # an earlier attempt's folder (a retry): replace it entry by entry
        trash = Path(output) / MARKER_DIR / TRASH / f"{job_id}.{int(run)}"
        for name in sorted(os.listdir(source)):
            if name == STAGED_NAME:
                continue
            if os.path.lexists(target / name):
                os.makedirs(trash, mode=DIR_MODE, exist_ok=True)
                os.rename(target / name, trash / name)
            os.rename(source / name, target / name)
        document = source / STAGED_NAME
    os.replace(document, target / RESULTS_NAME)  # last: the document names what is in place
    fsync_dir(target)
    return True


def accept(output: Path | str, job_id: str, run: int, folder_key: str,
           outcome: dict[str, Any]) -> dict[str, Any]:
    """The daemon accepted this outcome of attempt `run`: put the attempt's results in
    place if it ran the chain. The outcome to record (a full disk or missing files
    turn it into one that the scheduler handles as such)."""
    from forgesyte.daemon.clusterworker import lost

    if not outcome.get("output") or any(outcome.get(k) for k in ("requeue", "lost", "storage", "cancelled")):
        return outcome  # the chain did not finish: nothing of this attempt goes into place
    try:
        if publish(output, job_id, run, folder_key):
            return outcome
        return lost("The cluster worker reported the job done, but its results are not "
                    "in the shared output folder.")
    except OSError as exc:
        from forgesyte.daemon.diskspace import is_disk_error
        from forgesyte.storage.paths import redact

        if is_disk_error(exc):
            sentence = (f"The output folder cannot be written ({os.strerror(exc.errno)}), so the job's "
                        "results could not be put in place; the job waits until there is room.")
            return {"status": "failed", "output": None, "error": sentence, "storage": sentence}
        return lost(f"The job's results could not be moved into place in the output folder "
                    f"({redact(str(exc), output)}).")


def discard(output: Path | str, job_id: str, run: int) -> None:
    """Remove what an attempt left outside the job's folder (its staging, replaced files).
    A stale attempt still running may write again afterwards: `sweep` removes that."""
    for folder in (attempt_root(output, job_id, run), Path(output) / MARKER_DIR / TRASH / f"{job_id}.{int(run)}"):
        shutil.rmtree(folder, ignore_errors=True)


def sweep(output: Path | str, older_than: float, keep: set[str]) -> int:
    """Remove attempt folders not touched for `older_than` s, except the running ones
    (`keep`: "<job>.<run>" names); `older_than=0` and an empty `keep`: all of them."""
    import time

    removed = 0
    cutoff = time.time() - older_than
    for kind in (ATTEMPTS, TRASH):
        folder = Path(output) / MARKER_DIR / kind
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.name in keep or (older_than and entry.stat(follow_symlinks=False).st_mtime >= cutoff):
                    continue
            except OSError:
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed
