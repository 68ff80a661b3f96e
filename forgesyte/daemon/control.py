"""Changes the CLI asks for, applied by whoever holds the state lock.

With a daemon running, the request goes through the mailbox and the daemon
applies it on its own thread (Scheduler.handle_request, which passes the
`DaemonSide` hooks: a running job can only be stopped, and a new pending job
only queued, by the daemon that runs them); without one, the CLI takes the
lock and applies it directly. Either way exactly one process writes the
store at a time.

Requests (`op`): retry, retry_failed, prune, cancel, rerun, why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from forgesyte.config import Settings
from forgesyte.daemon import mailbox
from forgesyte.daemon.lock import StateLock
from forgesyte.storage.ids import utc_in
from forgesyte.storage.jobs import (
    FAILED, FINISHED, RUNNING, AmbiguousJob, IllegalTransition, JobNotFound, JobStore,
    public_record,
)
from forgesyte.storage.paths import Root, UnsafeKey
from forgesyte.storage.results import ResultStore
from forgesyte.text import display

CANCELLED = "Cancelled."


class ControlError(Exception):
    """One sentence for the user; exit 1."""


@dataclass
class DaemonSide:
    """What only the running daemon can do, handed to apply() by the scheduler."""

    cancel: Callable[[str], bool]  # stop a running job now (Executor.cancel); False: not running here
    finish: Callable[[str, str, str | None, str | None], None]  # Scheduler.finish (frees duplicates)
    queue: Callable[[str], None]  # a job that just became pending: dispatch it
    live: Callable[[str], dict[str, Any]] | None = None  # the intake's view of an inbox key (why)


def _ok(**fields: Any) -> dict[str, Any]:
    return {"ok": True, **fields}


def _refuse(error: str) -> dict[str, Any]:
    return {"ok": False, "error": error}


def _prune(store: JobStore, results: ResultStore, request: dict[str, Any]) -> dict[str, Any]:
    removed = store.prune(utc_in(-float(request["older_than_s"])))
    folders = 0
    if request.get("outputs"):
        for job in removed:
            if job.get("output"):
                try:
                    results.remove_job_folder(job["output"])
                    folders += 1
                except UnsafeKey:
                    pass
    return _ok(removed=len(removed), folders=folders)


def _retry(store: JobStore, request: dict[str, Any], daemon: DaemonSide | None) -> dict[str, Any]:
    job = store.resolve(str(request.get("job", "")))
    if job["status"] != FAILED:
        return _refuse(f"Job {job['id']} is {job['status']}, not failed; only a failed job can be retried.")
    job = store.retry(job["id"])
    if daemon is not None:
        daemon.queue(job["id"])
    return _ok(job=public_record(job))


def _retry_failed(store: JobStore, daemon: DaemonSide | None) -> dict[str, Any]:
    ids = [job["id"] for job in store.newest(None, FAILED)]
    for job_id in reversed(ids):  # oldest first, so they run in the order they came
        store.retry(job_id)
        if daemon is not None:
            daemon.queue(job_id)
    return _ok(retried=len(ids), jobs=ids)


def _cancel(store: JobStore, results: ResultStore, request: dict[str, Any],
            daemon: DaemonSide | None) -> dict[str, Any]:
    job = store.resolve(str(request.get("job", "")))
    if job["status"] in FINISHED:
        return _refuse(f"Job {job['id']} is already {job['status']}; only a pending or running "
                       "job can be cancelled.")
    if job["status"] == RUNNING and daemon is not None and daemon.cancel(job["id"]):
        # The worker's process group is killed now; its Done (failed, "Cancelled.") follows.
        return _ok(job=public_record(job), stopping=True)
    if daemon is not None:
        daemon.finish(job["id"], FAILED, None, CANCELLED)
        job = store.get(job["id"])
    else:
        # No daemon: nothing runs it (a `running` record here was left by a daemon that is gone).
        # Like every finished job it gets a results document carrying its record.
        output = results.write_finished(job, FAILED, CANCELLED)
        job = store.fail(job["id"], CANCELLED, output)
    return _ok(job=public_record(job), stopping=False)


def _rerun(store: JobStore, settings: Settings | None, request: dict[str, Any],
           daemon: DaemonSide | None) -> dict[str, Any]:
    if settings is None:
        return _refuse("This request needs the daemon's settings.")
    job = store.resolve(str(request.get("job", "")))
    if job["status"] not in FINISHED:
        return _refuse(f"Job {job['id']} is {job['status']}, not finished; only a completed or "
                       "failed job can be rerun.")
    key = job["input"]
    latest = store.latest_for_input(key)
    if latest is not None and latest["id"] != job["id"]:
        newest = store.get(latest["id"])
        if newest["status"] not in FINISHED:
            return _refuse(f"The input {display(key)} already has job {newest['id']}, {newest['status']}.")
    facts = request.get("facts") or {}
    try:
        st = os.stat(Root(settings.inbox).path_for(key))
    except (OSError, UnsafeKey):
        return _refuse(f"The input {display(key)} is no longer in the inbox, so job {job['id']} "
                       "cannot be rerun.")
    if (st.st_size, st.st_mtime_ns) != (facts.get("size"), facts.get("mtime_ns")) or not facts.get("sha256"):
        return _refuse(f"The input {display(key)} changed while it was being read; try again.")
    plugins = list(settings.chain_for(key)[0])
    # Not a duplicate of anything: a rerun is asked for to run the plugins again.
    new = store.create(key, size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=facts["sha256"],
                       plugins=plugins, duplicate_of=None)
    if daemon is not None:
        daemon.queue(new["id"])
    return _ok(job=public_record(new), rerun_of=job["id"])


def _why(store: JobStore, settings: Settings | None, request: dict[str, Any],
         daemon: DaemonSide | None) -> dict[str, Any]:
    from forgesyte.daemon.why import explain

    if settings is None:
        return _refuse("This request needs the daemon's settings.")
    live = daemon.live if daemon is not None else None
    return _ok(why=explain(settings, store, str(request.get("key", "")), live=live))


def apply(store: JobStore, results: ResultStore, request: dict[str, Any], *,
          settings: Settings | None = None, daemon: DaemonSide | None = None) -> dict[str, Any]:
    """Apply one request to the store; the answer is {"ok": bool, ...} (or "error": sentence)."""
    op = request.get("op")
    try:
        if op == "prune":
            return _prune(store, results, request)
        if op == "retry":
            return _retry(store, request, daemon)
        if op == "retry_failed":
            return _retry_failed(store, daemon)
        if op == "cancel":
            return _cancel(store, results, request, daemon)
        if op == "rerun":
            return _rerun(store, settings, request, daemon)
        if op == "why":
            return _why(store, settings, request, daemon)
    except (JobNotFound, AmbiguousJob, IllegalTransition) as exc:
        answer = _refuse(display(str(exc)))
        if isinstance(exc, AmbiguousJob):
            answer["candidates"] = list(getattr(exc, "candidates", []) or [])
        return answer
    return _refuse(f"Unknown request {op!r}.")


def request(settings: Settings, req: dict[str, Any]) -> dict[str, Any]:
    """Apply `req` via the daemon if one runs, else directly under the state lock.

    A state folder that does not exist is an error, not something to create:
    the usual cause is a mistyped --home, and folders made there would only hide it.
    """
    if not settings.state.is_dir():
        raise ControlError(f"There is no ForgeSyte state folder at {settings.state}; "
                           "check --home or --state.")
    lock = StateLock(settings.state)
    if lock.acquire(wait=0.2, owner="cli"):
        try:
            store = JobStore(settings.state)
            try:
                answer = apply(store, ResultStore(settings.output), req, settings=settings)
            finally:
                store.close()
        finally:
            lock.release()
    else:
        try:
            answer = mailbox.send(settings.state, req)
        except mailbox.MailboxError as exc:  # no answer in time, or the request could not be written
            raise ControlError(str(exc)) from None
    if not answer.get("ok"):
        raise ControlError(answer.get("error") or "The request failed.")
    return answer
