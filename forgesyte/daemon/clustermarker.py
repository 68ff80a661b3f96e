"""The cluster marker: how a `forgesyte worker` knows its folders are the daemon's.

A worker resolves every key against its own `--inbox` and `--output`, which
may be other mount points of the same shared folders. Nothing in a key says
whether a mount point is right, so the daemon (in cluster mode) writes a
marker into the output folder, and a twin carrying the same cluster id into
the inbox:

    <output>/.forgesyte-cluster/marker.json   {"format", "cluster", "version",
                                               "plugins": {name: version},
                                               "plugin_timeout", "worker_memory_mb"}
    <inbox>/.forgesyte-cluster                {"format", "cluster"}

A worker reads both at start and before every job: both present and naming
the same cluster as the job means both mounts are the daemon's folders; a
share that dropped (an empty mount point), a wrong path or another daemon's
folders all fail that test, and the worker refuses work instead of failing
jobs (a Tdarr node whose share dropped filled staging with limbo jobs).
The inbox twin is a hidden name without a video extension: never a job.

Claims (`<output>/.forgesyte-cluster/claims/<job>.<run>`) make sure an
attempt starts at most once: Dask re-runs a task whose worker died on another
worker (up to its `allowed-failures`), and recomputes a finished task whose
worker left before the daemon released it, behind the daemon's back. The
first execution creates the claim; the daemon settles it (creates it if
needed) as soon as it has the attempt's outcome; any later execution finds
it and reports the worker lost instead of running plugins, so the daemon's
`max_attempts` decides what happens next (and a stale report is dropped).
What an attempt writes is staged apart and moved into place by the daemon
only for the attempt it accepts (clusterstage.py).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgesyte.config import DIR_MODE
from forgesyte.storage.atomic import atomic_write_json

FORMAT = 1
MARKER_DIR = ".forgesyte-cluster"
MARKER_NAME = "marker.json"
INBOX_MARKER = ".forgesyte-cluster"
CLAIMS = "claims"


class NotShared(Exception):
    """The folders or the software are not the daemon's; one sentence (exit 2)."""


@dataclass(frozen=True)
class Identity:
    cluster: str
    version: str
    plugins: dict[str, str | None] = field(default_factory=dict)
    plugin_timeout: float = 600.0
    worker_memory_mb: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "cluster": self.cluster, "version": self.version,
                "plugins": dict(self.plugins), "plugin_timeout": self.plugin_timeout,
                "worker_memory_mb": self.worker_memory_mb}


def marker_path(output: Path | str) -> Path:
    return Path(output) / MARKER_DIR / MARKER_NAME


def inbox_marker_path(inbox: Path | str) -> Path:
    return Path(inbox) / INBOX_MARKER


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as fh:
            data = json.load(fh)
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def write(inbox: Path | str, output: Path | str, version: str, plugins: dict[str, str | None],
          plugin_timeout: float, worker_memory_mb: int | None) -> Identity:
    """The daemon's side, at start and on reload: keep the cluster id, refresh the rest."""
    old = _read_json(marker_path(output)) or {}
    cluster = old.get("cluster")
    if not isinstance(cluster, str) or not cluster.isalnum():
        cluster = secrets.token_hex(8)
    identity = Identity(cluster, version, dict(plugins), float(plugin_timeout), worker_memory_mb)
    os.makedirs(Path(output) / MARKER_DIR / CLAIMS, mode=DIR_MODE, exist_ok=True)
    atomic_write_json(marker_path(output), identity.as_json())
    twin = {"format": FORMAT, "cluster": cluster}
    if _read_json(inbox_marker_path(inbox)) != twin:
        atomic_write_json(inbox_marker_path(inbox), twin)
    return identity


def read(inbox: Path | str, output: Path | str) -> Identity:
    """The worker's side: the daemon's identity, if both folders carry its marker."""
    data = _read_json(marker_path(output))
    if data is None or not isinstance(data.get("cluster"), str):
        raise NotShared(
            f"The output folder {output} has no ForgeSyte cluster marker "
            f"({MARKER_DIR}/{MARKER_NAME}): it is not the shared output folder of a daemon "
            "started with --scheduler (or the share is not mounted)."
        )
    twin = _read_json(inbox_marker_path(inbox))
    if twin is None or twin.get("cluster") != data["cluster"]:
        raise NotShared(
            f"The inbox {inbox} is not the daemon's shared inbox (its {INBOX_MARKER} marker is "
            f"{'missing' if twin is None else 'from another cluster'}; the output folder's names "
            f"cluster {data['cluster']})."
        )
    plugins, timeout, memory = data.get("plugins"), data.get("plugin_timeout"), data.get("worker_memory_mb")
    if (not isinstance(data.get("version"), str) or not isinstance(plugins, dict)
            or not all(v is None or isinstance(v, str) for v in plugins.values())
            or not _number(timeout, positive=True) or not (memory is None or _number(memory, integer=True))):
        raise NotShared(f"The cluster marker {marker_path(output)} is damaged (a field is missing or "
                        "of the wrong type); restart the daemon to write it again.")
    return Identity(cluster=data["cluster"], version=data["version"], plugins=dict(plugins),
                    plugin_timeout=float(timeout), worker_memory_mb=memory)


def _number(value: Any, positive: bool = False, integer: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        return False
    return value == value and abs(value) != float("inf") and (not positive or value > 0)


def software_problem(expected_version: str, expected_plugins: dict[str, str | None],
                     version: str, available: dict[str, dict[str, Any]]) -> str | None:
    """Why this worker's ForgeSyte or plugins differ from the daemon's (None: they match)."""
    if expected_version != version:
        return f"This worker runs ForgeSyte {version} but the daemon runs {expected_version}."
    for name, wanted in sorted(expected_plugins.items()):
        info = available.get(name)
        if info is None:
            return f"Plugin '{name}' is not installed on this worker (the daemon uses it)."
        if info.get("error"):
            return f"Plugin '{name}' cannot be loaded on this worker: {info['error']}."
        if wanted is not None and info.get("version") != wanted:
            return (f"Plugin '{name}' is version {info.get('version')} on this worker "
                    f"but {wanted} on the daemon.")
    return None


# -- claims: one execution per attempt ----------------------------------------------

def _claim_path(output: Path | str, job_id: str, run: int) -> Path:
    return Path(output) / MARKER_DIR / CLAIMS / f"{job_id}.{int(run)}"


def claim(output: Path | str, job_id: str, run: int) -> bool:
    """True for the first execution of this attempt anywhere; False for any later one."""
    path = _claim_path(output, job_id, run)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    except FileExistsError:
        return False
    except FileNotFoundError:  # claims folder gone (output pruned by hand): make it again
        os.makedirs(path.parent, mode=DIR_MODE, exist_ok=True)
        return claim(output, job_id, run)
    os.close(fd)
    return True


def settle(output: Path | str, job_id: str, run: int) -> None:
    """The daemon, once it has an attempt's outcome: the attempt may never start again
    (Dask may still re-run its task if a worker holding it leaves). The claim stays
    until `sweep_claims` (attempt tokens only grow, so it never blocks a later attempt)."""
    try:
        os.close(os.open(_claim_path(output, job_id, run), os.O_WRONLY | os.O_CREAT, 0o640))
    except OSError:
        pass


def sweep_claims(output: Path | str, older_than: float) -> int:
    """Remove claims older than `older_than` seconds (Dask forgot those tasks long ago)."""
    folder = Path(output) / MARKER_DIR / CLAIMS
    removed = 0
    cutoff = time.time() - older_than
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            pass
    return removed


def clear_claims(output: Path | str) -> None:
    """At daemon start: the previous daemon's Dask client is gone, so the scheduler forgot
    its tasks and none of them can start again."""
    folder = Path(output) / MARKER_DIR / CLAIMS
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        try:
            os.unlink(folder / name)
        except OSError:
            pass
