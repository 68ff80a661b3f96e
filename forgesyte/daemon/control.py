"""Changes the CLI asks for (retry), applied by whoever holds the state lock.

With a daemon running, the request goes through the mailbox and the daemon
applies it on its own thread; without one, the CLI takes the lock and applies
it directly. Either way exactly one process writes the store at a time.
"""

from __future__ import annotations

from typing import Any

from forgesyte.config import Settings
from forgesyte.daemon import mailbox
from forgesyte.daemon.lock import StateLock
from forgesyte.storage.ids import utc_in
from forgesyte.storage.jobs import AmbiguousJob, IllegalTransition, JobNotFound, JobStore, public_record
from forgesyte.storage.paths import UnsafeKey
from forgesyte.storage.results import ResultStore


class ControlError(Exception):
    """One sentence for the user; exit 1."""


def apply(store: JobStore, results: ResultStore, request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    try:
        if op == "prune":
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
            return {"ok": True, "removed": len(removed), "folders": folders}
        if op == "retry":
            job = store.resolve(str(request.get("job", "")))
            if job["status"] != "failed":
                return {"ok": False, "error": f"Job {job['id']} is {job['status']}, not failed; only a failed job can be retried."}
            return {"ok": True, "job": public_record(store.retry(job["id"]))}
    except (JobNotFound, AmbiguousJob, IllegalTransition) as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": False, "error": f"Unknown request {op!r}."}


def request(settings: Settings, req: dict[str, Any]) -> dict[str, Any]:
    """Apply `req` via the daemon if one runs, else directly under the state lock."""
    lock = StateLock(settings.state)
    if lock.acquire(wait=0.2, owner="cli"):
        try:
            store = JobStore(settings.state)
            try:
                answer = apply(store, ResultStore(settings.output), req)
            finally:
                store.close()
        finally:
            lock.release()
    else:
        try:
            answer = mailbox.send(settings.state, req)
        except mailbox.MailboxTimeout as exc:
            raise ControlError(str(exc)) from None
    if not answer.get("ok"):
        raise ControlError(answer.get("error") or "The request failed.")
    return answer
