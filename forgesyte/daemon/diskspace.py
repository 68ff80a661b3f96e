"""A full or read-only output disk: pause, say so once, retry later, resume by itself.

A job that cannot write its results because the disk is full (ENOSPC), over
quota (EDQUOT) or read-only (EROFS) did nothing wrong; failing it would throw
away work the user wants as soon as there is room. So:

* in the worker, `worker_outcome` turns such an OSError out of run_chain into
  an outcome the scheduler understands ({"status": "failed", "storage": ...}),
  after removing what this attempt wrote (no zero-byte artifacts are left);
  the sentence names the plugin and the path as a key, never an absolute path;
* in the daemon, the scheduler puts the job back to pending without using an
  attempt and asks `OutputGate` before dispatching anything: while the disk is
  blocked nothing is dispatched; every PROBE_EVERY seconds it writes a small
  file into the output folder, and dispatch resumes when that works. The
  condition is logged once (plus a reminder every few minutes, conditions.py),
  and once when it clears. A job that hits the wall again waits longer each
  time (up to MAX_BACKOFF), so a plugin that fills the disk by itself cannot
  spin.

An error of that kind outside the output folder (a plugin's own temp files)
is the plugin's trouble, not the output's: it fails as a transient plugin
error (retried with backoff, attempts counted).
"""

from __future__ import annotations

import errno
import logging
import os
import time
from typing import Any

from forgesyte.conditions import Condition
from forgesyte.storage import layout
from forgesyte.storage.paths import Root, UnsafeKey, redact

log = logging.getLogger("forgesyte.daemon")

DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
PROBE_EVERY = 3.0  # seconds between probes of a blocked output folder
PROBE_NAME = ".forgesyte-probe"
PROBE_BYTES = 64 * 1024
FIRST_BACKOFF = 5.0
MAX_BACKOFF = 300.0


def is_disk_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_ERRORS


def _inside(root: Root, filename: Any) -> str | None:
    """The key of `filename` if it lies in the output folder (a temp name counts as its file)."""
    if filename is None:
        return None
    try:
        return root.key_for(os.fsdecode(filename))
    except (UnsafeKey, TypeError, ValueError):
        return None


def worker_outcome(exc: OSError, task: dict[str, Any], results: Any, plugin: str | None) -> dict[str, Any]:
    """The outcome for a disk error out of run_chain (in the worker process)."""
    root: Root = results.root
    folder = task["folder"]
    key = _inside(root, exc.filename)
    reason = os.strerror(exc.errno)
    if exc.filename is not None and key is None:
        # Not the output folder: the plugin's own files (e.g. in /tmp). Its failure, transient.
        where = plugin and f"Plugin '{plugin}'" or "A plugin"
        error = f"{where} could not write its own files: {redact(str(exc), root)}."
        return {"status": "failed", "output": None, "error": error, "transient": True}
    if key is None and exc.filename is None:  # write() names no file: the newest one is it
        key = _inside(root, layout.newest_file(root, folder))
    try:
        layout.remove_job_folder(root, folder)  # this attempt's partial artifacts
    except (OSError, UnsafeKey):
        pass  # read-only: nothing was written anyway
    if key is not None and key.startswith(folder + "/"):
        inner = key[len(folder) + 1:]
        what = "the results document" if inner.startswith((layout.RESULTS_NAME, ".")) \
            else f"plugin '{inner.split('/', 1)[0]}'"
    else:
        what = f"plugin '{plugin}'" if plugin else "the job"
    path = f": {key}" if key else ""
    error = (f"The output folder cannot be written ({reason}{path}), so {what} could not finish; "
             "the job waits until there is room.")
    return {"status": "failed", "output": None, "error": error, "storage": error}


class OutputGate:
    """Whether the output folder takes writes; probed while it does not."""

    def __init__(self, output: Root):
        self.output = output
        self.condition = Condition("output-full", log, level=logging.ERROR)
        self.blocked = False
        self._next_probe = 0.0
        self._strikes: dict[str, int] = {}

    def block(self, sentence: str) -> None:
        """A job could not write: pause dispatch (logged once, conditions.py)."""
        self.blocked = True
        self._next_probe = time.monotonic() + PROBE_EVERY
        self.condition.report(f"{sentence.rstrip('.')}; dispatch is paused and resumes by itself "
                              f"when the output folder takes writes again (checked every {PROBE_EVERY:g} s)")

    def backoff(self, job_id: str) -> float:
        """Seconds before this job may run again: grows with each time it hit the wall."""
        strikes = self._strikes[job_id] = self._strikes.get(job_id, 0) + 1
        return min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (strikes - 1))

    def forget(self, job_id: str) -> None:
        self._strikes.pop(job_id, None)

    def ready(self) -> bool:
        """True when dispatch may go on; probes (at most every PROBE_EVERY s) while blocked."""
        if not self.blocked:
            return True
        now = time.monotonic()
        if now < self._next_probe:
            return False
        self._next_probe = now + PROBE_EVERY
        if not self.probe():
            return False
        self.blocked = False
        self.condition.clear("the output folder takes writes again; dispatch resumed")
        return True

    def probe(self) -> bool:
        """Write, fsync and remove a small file in the output folder."""
        path = self.output.path / PROBE_NAME
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            try:
                view = memoryview(bytes(PROBE_BYTES))
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            return True
        except OSError:
            return False
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass
