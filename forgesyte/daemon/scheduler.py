"""Scheduling: which pending job runs next, and what an outcome does to the store.

The scheduler owns the daemon's queues (pending, delayed by backoff, parked
while the inbox looks unmounted, duplicates waiting for their original) and
is the only code that moves a job between statuses on the daemon's side. It
talks to whatever runs jobs through the Executor protocol (executor.py) and
never blocks: the lifecycle loop (service.py) calls it once a turn.
"""

from __future__ import annotations

import heapq
import logging
import os
import time
from typing import Any, Callable

from forgesyte.config import Settings
from forgesyte import similar
from forgesyte.daemon import control
from forgesyte.conditions import Condition
from forgesyte.daemon.diskspace import OutputGate, is_disk_error
from forgesyte.daemon.executor import Done, Event, Executor, Progress
from forgesyte.storage.ids import seconds_until, utc_in
from forgesyte.storage.jobs import COMPLETED, FAILED, PENDING, RUNNING, JobNotFound, JobStore, public_record
from forgesyte.storage.paths import Root, UnsafeKey, redact
from forgesyte.storage.results import ResultsMissing, ResultStore

log = logging.getLogger("forgesyte.daemon")


class Scheduler:
    def __init__(self, settings: Settings, store: JobStore, results: ResultStore, inbox: Root,
                 executor: Executor, resettle: Callable[[str], None]):
        self.settings = settings
        self.store = store
        self.results = results
        self.inbox = inbox
        self.executor = executor
        self.resettle = resettle  # hand an input back to the settle gate
        self.pending: dict[str, None] = {}  # ordered set of job ids to dispatch
        self.waiting: dict[str, list[str]] = {}  # original id -> duplicates waiting for it
        self.parked: list[str] = []  # pending jobs waiting for an empty inbox to fill again
        self.delayed: list[tuple[float, str]] = []  # (monotonic due time, job id): backoff
        self.paused = False  # the inbox is gone: dispatch nothing
        self.failed_this_run = 0
        self._progress_written: dict[str, float] = {}
        self._created_since_flush: set[str] = set()
        self._last_flush = 0.0
        self._flush_every = 0.02  # adapts to 10x the cost of a flush, so writing stays <10% of time
        self.live: Callable[[str], dict[str, Any]] | None = None  # the intake's view of a key (`why`)
        self._next_prune = 0.0
        self.disk = OutputGate(results.root)  # a full or read-only output pauses dispatch (diskspace.py)
        self._store_trouble = Condition("state-write", log, level=logging.ERROR)  # logged once, not per try
        self._inbox_empty_parked = Condition("inbox-empty", log, level=logging.ERROR)  # once, not per job

    # -- the store's writes ----------------------------------------------------
    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_flush < self._flush_every:
            return
        try:
            if self.store.flush():
                cost = time.monotonic() - now
                self._flush_every = min(1.0, max(0.02, 10 * cost))
        except OSError as exc:
            self._store_trouble.report(f"cannot write the job store ({redact(exc, self.settings.state)}); "
                                       "retrying every second; the daemon keeps what it has in memory")
            self._last_flush, self._flush_every = now, 1.0
            return
        self._store_trouble.clear("the job store is written again")
        self._last_flush = now
        self._created_since_flush.clear()

    # -- start -------------------------------------------------------------------
    def recover(self) -> None:
        """Reconcile the store with the disk after a crash, then requeue what is left.

        Writes are batched, so the store may be one batch behind: a job whose
        results document is on disk ran to the end, whatever its record says.
        Jobs left running go back to pending, until they run out of attempts.
        """
        # One chunk at a time: a restart with 100,000 jobs pending holds no copy of them all.
        for job in self.store.iter_status(RUNNING, PENDING):
            outcome = self.results.outcome(ResultStore.job_folder_key(job["input"], job["id"]), job)
            if outcome is None:
                continue
            status, key, error = outcome
            if status == COMPLETED:
                self.store.complete(job["id"], key)
            else:
                self.store.fail(job["id"], error, key)
            log.info("job %s %s: %s (found its results on disk)", job["id"], job["input"], status)
        for job in self.store.iter_status(RUNNING):
            if job["attempts"] >= self.settings.max_attempts:
                self.finish(job["id"], FAILED, None, (
                    f"Gave up after {job['attempts']} attempts: the daemon stopped "
                    "while this job was running each time."
                ))
                log.warning("job %s %s: failed after %d interrupted attempts",
                            job["id"], job["input"], job["attempts"])
            else:
                self.store.requeue(job["id"], count_attempt=True)
                log.info("job %s %s: interrupted by a crash, back to pending", job["id"], job["input"])
        for job in self.store.iter_status(PENDING):
            self.queue(job)
        self.store.flush()

    # -- queues ------------------------------------------------------------------
    def queue(self, job: dict[str, Any]) -> None:
        """Pending now, or after its backoff if a plugin failed transiently."""
        wait = seconds_until(job.get("retry_at"))
        if wait > 0:
            heapq.heappush(self.delayed, (time.monotonic() + wait, job["id"]))
        else:
            self.pending[job["id"]] = None

    def add(self, job_id: str, created: bool) -> None:
        """A job intake made (or updated) is pending."""
        self.pending[job_id] = None
        if created:
            self._created_since_flush.add(job_id)

    @property
    def idle(self) -> bool:
        return not self.pending and not self.delayed and not self.waiting and not self.executor.running()

    def _inbox_empty(self) -> bool:
        try:
            with os.scandir(self.settings.inbox) as entries:
                return next(entries, None) is None
        except OSError:
            return True

    # -- dispatch: pending -> running ---------------------------------------------
    def dispatch(self) -> None:
        while self.delayed and self.delayed[0][0] <= time.monotonic():
            self.pending[heapq.heappop(self.delayed)[1]] = None
        if self.paused or not self.disk.ready():
            return
        if self.parked and not self._inbox_empty():
            for job_id in self.parked:
                self.pending[job_id] = None
            self._inbox_empty_parked.clear(f"the inbox has files again; {len(self.parked)} jobs that "
                                           "waited for it are dispatched")
            self.parked.clear()
        while self.executor.free_slots() > 0 and self.pending:
            job_id = next(iter(self.pending))
            del self.pending[job_id]
            if not self._start(job_id):
                return

    def _start(self, job_id: str) -> bool:
        """Try to run one pending job; False: stop dispatching for this turn."""
        job = self.store.get(job_id)
        if job["status"] != PENDING:
            return True
        if job["duplicate_of"] and self._reuse(job):
            return True
        try:
            st = os.stat(self.inbox.path_for(job["input"]))
        except UnsafeKey:
            self.finish(job_id, FAILED, None, "The input now leads outside the inbox.")
            return True
        except FileNotFoundError:
            if self._inbox_empty():
                # All inputs gone at once looks like an unmounted share, not a deletion.
                self.parked.append(job_id)
                log.debug("job %s %s: input missing and the inbox is empty; parked", job_id, job["input"])
                self._inbox_empty_parked.report(
                    f"inputs of pending jobs are missing and the inbox is empty (unmounted?), e.g. job "
                    f"{job_id}; such jobs stay pending until the inbox has files again",
                    jobs=len(self.parked))
                return True
            self.finish(job_id, FAILED, None,
                        f"The input file {job['input']} disappeared before it was processed.")
            return True
        if (st.st_size, st.st_mtime_ns) != (job["size"], job["mtime_ns"]):
            latest = self.store.latest_for_input(job["input"])
            if latest["id"] != job_id:
                self.finish(job_id, FAILED, None, (
                    f"The input {job['input']} has changed since this job was made; "
                    f"its new content is job {latest['id']}."))
            else:
                self.resettle(job["input"])  # intake updates this same job
            return True
        if job_id in self._created_since_flush:
            # Durable before it runs: no results folder may exist for a job the store lost.
            self.flush(force=True)
            if job_id in self._created_since_flush:
                self.pending[job_id] = None
                return False
        job = self.store.claim(job_id)
        log.info("job %s %s: running (attempt %d)", job_id, job["input"], job["attempts"])
        self.executor.submit({
            "job_id": job_id,
            "run": job.get("run", 0),
            "input": job["input"],
            "folder": ResultStore.job_folder_key(job["input"], job_id),
            "plugins": job["plugins"],
            "options": self.settings.chain_for(job["input"])[1],
            "record": public_record(job),
        })
        return True

    def _reuse(self, job: dict[str, Any]) -> bool:
        """A duplicate takes its original's result. False: run the plugins after all."""
        try:
            original = self.store.get(job["duplicate_of"])
        except JobNotFound:
            return False  # pruned since: run the plugins
        if original["status"] in (PENDING, RUNNING):
            self.waiting.setdefault(original["id"], []).append(job["id"])
            return True
        if original["status"] == FAILED:
            self.finish(job["id"], FAILED, None, original["error"])
            return True
        try:
            document = self.results.read(original["output"])
        except (ResultsMissing, UnsafeKey):
            return False
        try:  # the document carries the duplicate's record, like every finished job's
            key = self.results.write_finished(job, COMPLETED, None, plugins=document.get("plugins", {}),
                                              duplicate_of=original["id"])
        except OSError as exc:
            if not is_disk_error(exc):
                raise
            self._wait_for_room(job, f"The output folder cannot be written ({os.strerror(exc.errno)}), "
                                     "so this duplicate's results could not be written; "
                                     "the job waits until there is room.")
            return True
        self.finish(job["id"], COMPLETED, key, None)
        return True

    # -- outcomes ------------------------------------------------------------------
    def apply(self, event: Event) -> None:
        try:
            job = self.store.get(event.job_id)
        except JobNotFound:
            return
        if job["status"] != RUNNING or event.run != job.get("run", 0):
            log.debug("job %s: ignoring an event of a stale attempt", event.job_id)
            return
        if isinstance(event, Progress):
            # A new plugin is written at once (list and watch show it); percentages once a second.
            now = time.monotonic()
            new_plugin = event.plugin is not None and event.plugin != job.get("plugin")
            if new_plugin or (now - self._progress_written.get(event.job_id, 0.0) >= 1.0 and event.percent >= 0):
                self._progress_written[event.job_id] = now
                percent = event.percent if event.percent >= 0 else job.get("progress", 0)
                self.store.set_progress(event.job_id, percent, plugin=event.plugin)
            return
        assert isinstance(event, Done)
        outcome = event.outcome
        if outcome.get("requeue"):  # not run (e.g. the cluster's scheduler went away): not an attempt
            job = self.store.requeue(event.job_id, count_attempt=False)
            log.warning("job %s %s: %s", job["id"], job["input"], outcome.get("error") or "back to pending")
            self.queue(job)
            return
        if outcome.get("storage"):  # the output is full or read-only: wait for room, use no attempt
            self._wait_for_room(job, outcome["storage"])
            return
        if outcome["status"] == FAILED and outcome.get("transient"):
            if job["attempts"] < self.settings.max_attempts:
                wait = self.settings.retry_backoff * 2 ** (job["attempts"] - 1)
                job = self.store.requeue(event.job_id, count_attempt=True, retry_at=utc_in(wait),
                                         error=outcome.get("error"))
                log.warning("job %s %s: %s; retrying in %g s (attempt %d of %d)", job["id"], job["input"],
                            outcome.get("error"), wait, job["attempts"] + 1, self.settings.max_attempts)
                self.queue(job)
                return
        self.finish(event.job_id, outcome["status"], outcome.get("output"), outcome.get("error"))

    def _wait_for_room(self, job: dict[str, Any], sentence: str) -> None:
        """Back to pending (no attempt used), dispatch paused until the output takes writes."""
        if job["status"] == RUNNING:
            job = self.store.requeue(job["id"], count_attempt=False, error=sentence)
        self.disk.block(sentence)
        heapq.heappush(self.delayed, (time.monotonic() + self.disk.backoff(job["id"]), job["id"]))
        log.info("job %s %s: back to pending until the output folder takes writes", job["id"], job["input"])

    def finish(self, job_id: str, status: str, output: str | None, error: str | None) -> None:
        self._progress_written.pop(job_id, None)
        self.disk.forget(job_id)
        if status == COMPLETED:
            job = self.store.complete(job_id, output)
            log.info("job %s %s: completed", job_id, job["input"])
            similar.job_completed(self.settings.state, self.store, self.results, job)  # `forgesyte similar`
        else:
            if output is None:  # finished without a worker: its results document carries the record
                try:
                    output = self.results.write_finished(self.store.get(job_id), FAILED,
                                                         error or "The job failed.")
                except (OSError, UnsafeKey) as exc:
                    log.warning("job %s: could not write its results document (%s)", job_id, exc)
            job = self.store.fail(job_id, error or "The job failed.", output)
            self.failed_this_run += 1
            log.warning("job %s %s: failed: %s", job_id, job["input"], job["error"])
        for waiting_id in self.waiting.pop(job_id, []):
            self.pending[waiting_id] = None

    def interrupted(self, job_ids: list[str]) -> None:
        """Jobs still running when the daemon stops go back to pending (no attempt used)."""
        for job_id in job_ids:
            self.store.requeue(job_id, count_attempt=False)
            log.info("job %s: stopped with the daemon, back to pending", job_id)

    # -- requests from the CLI ------------------------------------------------------
    def handle_request(self, request: dict[str, Any]) -> dict[str, Any]:
        # What only the daemon can do for a request: stop a running job (cancel),
        # finish one (freeing its duplicates), queue a new pending one, see the intake (why).
        daemon = control.DaemonSide(cancel=self.executor.cancel, finish=self.finish,
                                    queue=lambda job_id: self.add(job_id, created=True), live=self.live)
        answer = control.apply(self.store, self.results, request, settings=self.settings, daemon=daemon)
        self.flush(force=True)  # the CLI's answer must be durable
        return answer

    def retention(self) -> None:
        """The configured retention, applied at start and then hourly."""
        if self.settings.retention is None or time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + 3600
        answer = control.apply(self.store, self.results, {
            "op": "prune", "older_than_s": self.settings.retention,
            "outputs": self.settings.retention_outputs,
        })
        if answer.get("removed"):
            log.info("retention: pruned %d finished jobs older than %g s",
                     answer["removed"], self.settings.retention)

    def reconfigure(self, settings: Settings) -> None:
        self.settings = settings
        self._next_prune = 0.0
