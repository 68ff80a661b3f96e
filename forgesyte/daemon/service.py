"""The daemon's lifecycle and its one loop.

Data flows one way: inbox event -> settle gate -> hash -> job record
(pending) -> worker runs plugins -> results document -> record completed or
failed. Everything that writes the job store happens on this loop's thread,
so the store needs no locking of its own; watchdog and the hashing/scanning
threads only hand work to the loop through queues and futures.
"""

from __future__ import annotations

import heapq
import logging
import os
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from forgesyte import __version__
from forgesyte.config import ConfigError, Settings
from forgesyte.daemon import control, mailbox
from forgesyte.daemon.lock import StateLock
from forgesyte.daemon.selection import Selection
from forgesyte.daemon.intake import Intake
from forgesyte.daemon.systemd import Notifier
from forgesyte.daemon.watch import FILE, InboxWatcher, scan
from forgesyte.daemon.workers import WorkerEvent, WorkerPool
from forgesyte.storage.ids import seconds_until, utc_in
from forgesyte.storage.jobs import COMPLETED, FAILED, PENDING, RUNNING, JobNotFound, JobStore
from forgesyte.storage.paths import Root, UnsafeKey
from forgesyte.storage.results import ResultsMissing, ResultStore

log = logging.getLogger("forgesyte.daemon")

TICK = 0.05


class AlreadyRunning(Exception):
    pass


class Daemon:
    def __init__(self, settings: Settings, *, once: bool = False, log_level: int = logging.INFO,
                 reload: Callable[[], Settings] | None = None):
        self.settings = settings
        self.reload_settings = reload
        self.notifier = Notifier()
        self._reload_requested = False
        self._next_status = 0.0
        self.once = once
        self.log_level = log_level
        self.inbox = Root(settings.inbox)
        self.results = ResultStore(settings.output)
        self.selection = Selection(settings.video_extensions, settings.ignore_patterns)
        self.stopping = False
        self.pending: dict[str, None] = {}  # ordered set of job ids to dispatch
        self.waiting: dict[str, list[str]] = {}  # original id -> duplicates waiting for it
        self.parked: list[str] = []  # pending jobs waiting for an empty inbox to fill again
        self.delayed: list[tuple[float, str]] = []  # (monotonic due time, job id): backoff
        self.failed_this_run = 0
        self._progress_written: dict[str, float] = {}
        self._created_since_flush: set[str] = set()
        self._last_flush = 0.0
        self._flush_every = 0.02  # adapts to 10x the cost of a flush, so writing stays <10% of time
        self._next_prune = 0.0
        self._scan_future: Future | None = None
        self._next_scan = 0.0
        self._inbox_missing = False
        # An inbox that is a mount point at start must stay one: an unmounted
        # share leaves an empty directory behind, which is not the inbox.
        self._inbox_was_mount = os.path.ismount(settings.inbox)

    # -- lifecycle -----------------------------------------------------------
    def _on_signal(self, signum, _frame) -> None:
        if signum == signal.SIGHUP:
            self._reload_requested = True
            return
        if not self.stopping:
            log.info("received %s; stopping", signal.Signals(signum).name)
        self.stopping = True

    def run(self) -> int:
        lock = StateLock(self.settings.state)
        if not lock.acquire():
            raise AlreadyRunning(
                f"Another ForgeSyte daemon already holds the state folder {self.settings.state}."
            )
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        self.store = JobStore(self.settings.state, autoflush=False)
        self.scanner = ThreadPoolExecutor(1, thread_name_prefix="forgesyte-scan")
        self.intake = Intake(self.settings, self.inbox, self.store,
                             scan_dir=lambda key: self.scanner.submit(self._scan_into_queue, key))
        self.pool = None
        self.watcher = InboxWatcher(
            self.inbox, self.selection, self.settings.polling, self.settings.polling_interval
        )
        try:
            self._recover()
            self.pool = WorkerPool(
                self.settings.workers, str(self.settings.output), self.settings.plugin_timeout,
                self.log_level, self.settings.worker_memory_mb,
            )
            self.watcher.start()
            self._start_scan()
            log.info("ForgeSyte %s started: %d workers, plugins %s", __version__,
                     self.settings.workers, ",".join(self.settings.plugins))
            print(f"ForgeSyte is watching {self.settings.inbox}", flush=True)
            print(f"Results go to {self.settings.output}", flush=True)
            self.notifier.ready(self._status_text())
            self._loop()
            self._drain_running()
        finally:
            self._shutdown()
            self.notifier.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            lock.release()
        return 1 if (self.once and self.failed_this_run) else 0

    def _recover(self) -> None:
        """Reconcile the store with the disk after a crash, then requeue what is left.

        Writes are batched, so the store may be one batch behind: a job whose
        results document is on disk ran to the end, whatever its record says.
        Jobs left running go back to pending, until they run out of attempts.
        """
        for job in self.store.with_status(RUNNING, PENDING):
            outcome = self.results.outcome(ResultStore.job_folder_key(job["input"], job["id"]), job["id"])
            if outcome is None:
                continue
            status, key, error = outcome
            if status == COMPLETED:
                self.store.complete(job["id"], key)
            else:
                self.store.fail(job["id"], error, key)
            log.info("job %s %s: %s (found its results on disk)", job["id"], job["input"], status)
        for job in self.store.with_status(RUNNING):
            if job["attempts"] >= self.settings.max_attempts:
                self.store.fail(job["id"], (
                    f"Gave up after {job['attempts']} attempts: the daemon stopped "
                    "while this job was running each time."
                ))
                log.warning("job %s %s: failed after %d interrupted attempts",
                            job["id"], job["input"], job["attempts"])
            else:
                self.store.requeue(job["id"], count_attempt=True)
                log.info("job %s %s: interrupted by a crash, back to pending", job["id"], job["input"])
        for job in self.store.with_status(PENDING):
            self._queue_pending(job)
        self.store.flush()

    def _status_text(self) -> str:
        counts = self.store.counts()
        return ("Watching {inbox}: {pending} pending, {running} running, {completed} completed, "
                "{failed} failed").format(inbox=self.settings.inbox, **counts)

    def _drain_running(self) -> None:
        """A graceful stop: no new work; running jobs get `stop_grace` seconds to finish.
        Whatever is still running then goes back to pending in _shutdown."""
        if self.pool is None:
            return
        self.notifier.stopping(f"Stopping: {len(self.pool.busy_jobs)} running jobs finishing")
        self.watcher.stop()
        deadline = time.monotonic() + self.settings.stop_grace
        while self.pool.busy_jobs and time.monotonic() < deadline:
            for event in self.pool.poll(min(TICK * 4, max(0.0, deadline - time.monotonic()))):
                self._apply(event)
            self._flush()

    def _shutdown(self) -> None:
        self.watcher.close()
        self.intake.close()
        self.scanner.shutdown(wait=False, cancel_futures=True)
        if self.pool is not None:
            for job_id in self.pool.shutdown():
                self.store.requeue(job_id, count_attempt=False)
                log.info("job %s: stopped with the daemon, back to pending", job_id)
        try:
            self.store.close()
        except OSError as exc:
            log.error("could not write the job store at stop (%s)", exc)
        log.info("stopped")

    # -- the loop ------------------------------------------------------------
    def _flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_flush < self._flush_every:
            return
        try:
            if self.store.flush():
                cost = time.monotonic() - now
                self._flush_every = min(1.0, max(0.02, 10 * cost))
        except OSError as exc:
            log.error("cannot write the job store (%s); will retry", exc)
            return
        self._last_flush = now
        self._created_since_flush.clear()

    def _loop(self) -> None:
        while not self.stopping:
            self._flush()
            self._maintain()
            self._retention()
            self._systemd()
            if not self._inbox_missing:
                self.intake.drain(self.watcher.events)
                for job_id, created in self.intake.step():
                    self.pending[job_id] = None
                    if created:
                        self._created_since_flush.add(job_id)
            mailbox.serve(self.settings.state, self._handle_request)
            self._dispatch()
            for event in self.pool.poll(TICK):
                self._apply(event)
            if self.once and self._drained():
                break

    def _drained(self) -> bool:
        return (
            self._scan_future is not None and self._scan_future.done()
            and self.watcher.events.empty() and self.intake.idle
            and not self.pending and not self.delayed and not self.waiting and not self.pool.busy_jobs
        )

    def _systemd(self) -> None:
        healthy = (self._inbox_missing or self.watcher.healthy()) and self.pool.healthy()
        self.notifier.watchdog(healthy)
        if self.notifier.enabled and time.monotonic() >= self._next_status:
            self._next_status = time.monotonic() + 2.0
            self.notifier.status(self._status_text())
        if self._reload_requested:
            self._reload_requested = False
            self._reload()

    def _reload(self) -> None:
        """SIGHUP: new plugins, rules, patterns and timings; running and pending jobs stay."""
        if self.reload_settings is None:
            return
        from forgesyte.plugins.registry import DiscoveryFailed, probe

        self.notifier.reloading()
        try:
            new = self.reload_settings()
            available = probe()
            bad = sorted(n for n in new.all_plugin_names() if n not in available or available[n]["error"])
            if bad:
                raise ConfigError(f"plugins not available: {', '.join(bad)}")
        except (ConfigError, DiscoveryFailed) as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            self.notifier.ready(self._status_text())
            return
        fixed = ("inbox", "output", "state", "workers", "polling", "worker_memory_mb")
        changed = [name for name in fixed if getattr(new, name) != getattr(self.settings, name)]
        if changed:
            log.warning("reload: %s can only change with a restart; keeping the running values",
                        ", ".join(changed))
            new = new.with_overrides(**{name: getattr(self.settings, name) for name in fixed})
        self.settings = new
        self.selection.update(new.video_extensions, new.ignore_patterns)
        self.intake.reconfigure(new)
        self.pool.plugin_timeout = new.plugin_timeout
        self._next_prune = 0.0
        log.info("configuration reloaded: plugins %s, %d rules", ",".join(new.plugins), len(new.rules))
        self.notifier.ready(self._status_text())
        self._start_scan(force=True)  # new patterns may take files that were ignored

    def _inbox_available(self) -> bool:
        if not os.path.isdir(self.settings.inbox):
            return False
        return not self._inbox_was_mount or os.path.ismount(self.settings.inbox)

    def _maintain(self) -> None:
        present = self._inbox_available()
        if not present and not self._inbox_missing:
            self._inbox_missing = True
            log.error("the inbox %s is gone (unmounted?); intake paused until it returns; "
                      "no job is failed or re-queued because of it", self.settings.inbox)
            self.watcher.stop()
            self.intake.pause()
        elif present and self._inbox_missing:
            self._inbox_missing = False
            log.warning("the inbox %s is back; resuming intake", self.settings.inbox)
            self.watcher.start()
            self._start_scan()
        elif present and not self.watcher.healthy():
            log.error("the inbox observer died; restarting it and rescanning")
            self.watcher.restart()
            self.intake.forget_open_handles()
            self._start_scan(force=True)
        if self.watcher.overflow.flag.is_set():
            self.watcher.overflow.flag.clear()
            log.warning("inotify queue overflowed: events were lost; rescanning the inbox now")
            self.intake.forget_open_handles()  # close events may be among the lost ones
            self._start_scan(force=True)
        if not self.once and time.monotonic() >= self._next_scan and not self._inbox_missing:
            self._start_scan()
        if self._scan_future is not None and self._scan_future.done():
            exc = self._scan_future.exception()
            if exc is not None:
                log.error("inbox scan failed: %s", exc)

    def _start_scan(self, force: bool = False) -> None:
        """Queue a full scan; `force` queues one even if a scan is running (it may
        have passed the files that lost their events already)."""
        if not force and self._scan_future is not None and not self._scan_future.done():
            return
        self._next_scan = time.monotonic() + self.settings.scan_interval
        self._scan_future = self.scanner.submit(self._scan_into_queue, None)

    def _scan_into_queue(self, under: str | None) -> None:
        for key in scan(self.inbox, self.selection, under):
            self.watcher.events.put((FILE, key))

    # -- dispatch: pending -> running -----------------------------------------
    def _inbox_empty(self) -> bool:
        try:
            with os.scandir(self.settings.inbox) as entries:
                return next(entries, None) is None
        except OSError:
            return True

    def _queue_pending(self, job: dict[str, Any]) -> None:
        """Pending now, or after its backoff if a plugin failed transiently."""
        wait = seconds_until(job.get("retry_at"))
        if wait > 0:
            heapq.heappush(self.delayed, (time.monotonic() + wait, job["id"]))
        else:
            self.pending[job["id"]] = None

    def _dispatch(self) -> None:
        while self.delayed and self.delayed[0][0] <= time.monotonic():
            self.pending[heapq.heappop(self.delayed)[1]] = None
        if self._inbox_missing:
            return
        if self.parked and not self._inbox_empty():
            for job_id in self.parked:
                self.pending[job_id] = None
            self.parked.clear()
        while self.pool.idle and self.pending:
            job_id = next(iter(self.pending))
            del self.pending[job_id]
            job = self.store.get(job_id)
            if job["status"] != PENDING:
                continue
            if job["duplicate_of"] and self._reuse(job):
                continue
            try:
                path = self.inbox.path_for(job["input"])
                st = os.stat(path)
            except UnsafeKey:
                self._finish(job_id, "failed", None, "The input now leads outside the inbox.")
                continue
            except FileNotFoundError:
                if self._inbox_empty():
                    # All inputs gone at once looks like an unmounted share, not a deletion.
                    log.error("job %s %s: input missing and the inbox is empty (unmounted?); "
                              "the job stays pending", job_id, job["input"])
                    self.parked.append(job_id)
                    continue
                self._finish(job_id, "failed", None,
                             f"The input file {job['input']} disappeared before it was processed.")
                continue
            if (st.st_size, st.st_mtime_ns) != (job["size"], job["mtime_ns"]):
                latest = self.store.latest_for_input(job["input"])
                if latest["id"] != job_id:
                    self._finish(job_id, "failed", None, (
                        f"The input {job['input']} has changed since this job was made; "
                        f"its new content is job {latest['id']}."))
                else:
                    self.intake.observe(job["input"])  # re-settle; intake updates this job
                continue
            if job_id in self._created_since_flush:
                # Durable before it runs: no results folder may exist for a job the store lost.
                self._flush(force=True)
                if job_id in self._created_since_flush:
                    self.pending[job_id] = None
                    return
            job = self.store.claim(job_id)
            log.info("job %s %s: running (attempt %d)", job_id, job["input"], job["attempts"])
            self.pool.submit({
                "job_id": job_id,
                "input": job["input"],
                "input_path": str(path),
                "folder": ResultStore.job_folder_key(job["input"], job_id),
                "plugins": job["plugins"],
                "options": self.settings.chain_for(job["input"])[1],
            })

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
            self._finish(job["id"], "failed", None, original["error"])
            return True
        try:
            document = self.results.read(original["output"])
        except (ResultsMissing, UnsafeKey):
            return False
        folder = ResultStore.job_folder_key(job["input"], job["id"])
        key = self.results.write(folder, {
            "job_id": job["id"], "input": job["input"],
            "duplicate_of": original["id"], "plugins": document.get("plugins", {}),
        })
        self._finish(job["id"], "completed", key, None)
        return True

    # -- outcomes -------------------------------------------------------------
    def _apply(self, event: WorkerEvent) -> None:
        if event.kind == "progress":
            now = time.monotonic()
            if now - self._progress_written.get(event.job_id, 0.0) >= 1.0:
                self._progress_written[event.job_id] = now
                self.store.set_progress(event.job_id, event.value)
            return
        outcome = event.value
        if outcome["status"] == FAILED and outcome.get("transient"):
            job = self.store.get(event.job_id)
            if job["attempts"] < self.settings.max_attempts:
                wait = self.settings.retry_backoff * 2 ** (job["attempts"] - 1)
                retry_at = utc_in(wait)
                job = self.store.requeue(event.job_id, count_attempt=True, retry_at=retry_at,
                                         error=outcome.get("error"))
                log.warning("job %s %s: %s; retrying in %g s (attempt %d of %d)", job["id"], job["input"],
                            outcome.get("error"), wait, job["attempts"] + 1, self.settings.max_attempts)
                self._queue_pending(job)
                return
        self._finish(event.job_id, outcome["status"], outcome.get("output"), outcome.get("error"))

    def _finish(self, job_id: str, status: str, output: str | None, error: str | None) -> None:
        self._progress_written.pop(job_id, None)
        if status == COMPLETED:
            job = self.store.complete(job_id, output)
            log.info("job %s %s: completed", job_id, job["input"])
        else:
            job = self.store.fail(job_id, error or "The job failed.", output)
            self.failed_this_run += 1
            log.warning("job %s %s: failed: %s", job_id, job["input"], job["error"])
        for waiting_id in self.waiting.pop(job_id, []):
            self.pending[waiting_id] = None

    # -- requests from the CLI ------------------------------------------------
    def _handle_request(self, request: dict[str, Any]) -> dict[str, Any]:
        answer = control.apply(self.store, self.results, request)
        if answer.get("ok") and request.get("op") == "retry":
            self.pending[answer["job"]["id"]] = None
        self._flush(force=True)  # the CLI's answer must be durable
        return answer

    def _retention(self) -> None:
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

