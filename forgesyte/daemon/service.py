"""The daemon's lifecycle and its one loop.

Data flows one way: inbox event -> settle gate -> hash -> job record
(pending) -> worker runs plugins -> results document -> record completed or
failed. Everything that writes the job store happens on this loop's thread,
so the store needs no locking of its own; watchdog and the hashing/scanning
threads only hand work to the loop through queues and futures.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from forgesyte import __version__
from forgesyte.config import ConfigError, Settings
from forgesyte import conditions
from forgesyte.daemon import mailbox
from forgesyte.daemon.executor import Executor, LocalExecutor
from forgesyte.daemon.intake import Intake
from forgesyte.daemon.lock import StateLock
from forgesyte.daemon.scheduler import Scheduler
from forgesyte.daemon.selection import Selection
from forgesyte.daemon.systemd import Notifier
from forgesyte.daemon.watch import InboxWatcher, scan
from forgesyte.daemon.workers import WorkerPool
from forgesyte.storage.recovery import open_daemon_store
from forgesyte.storage.paths import Root
from forgesyte.storage.results import ResultStore

log = logging.getLogger("forgesyte.daemon")

TICK = 0.05


class AlreadyRunning(Exception):
    pass


class Daemon:
    """Lifecycle: lock, signals, systemd, the loop; scheduling and running live elsewhere."""

    def __init__(self, settings: Settings, *, once: bool = False, log_level: int = logging.INFO,
                 reload: Callable[[], Settings] | None = None, available: dict | None = None):
        self.settings = settings
        self.reload_settings = reload
        self.available = available  # run's probe() of the plugins (the cluster marker lists their versions)
        self.notifier = Notifier()
        self._reload_requested = False
        self._next_status = 0.0
        self.once = once
        self.log_level = log_level
        self.inbox = Root(settings.inbox)
        self.results = ResultStore(settings.output)
        self.selection = Selection(settings.video_extensions, settings.ignore_patterns)
        self.stopping = False
        self._stop_now = False  # a second stop signal: skip the grace period
        self._stop_signal: int | None = None
        self._scan_future: Future | None = None
        self._next_scan = 0.0
        self._inbox_missing = False
        self._inbox_gone = conditions.Condition("inbox-missing", log, level=logging.ERROR)
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
            self._stop_signal = signum
        elif not self._stop_now:
            # A second Ctrl-C (or SIGTERM): stop at once; running jobs go back to pending.
            log.warning("received %s again; stopping now, running jobs go back to pending",
                        signal.Signals(signum).name)
            self._stop_now = True
        self.stopping = True

    def _executor(self) -> Executor:
        if self.settings.scheduler:  # jobs run on the Dask cluster (daemon/cluster.py)
            from forgesyte.daemon.cluster import DaskExecutor

            return DaskExecutor(self.settings, self.log_level, self.available)
        return LocalExecutor(WorkerPool(
            self.settings.workers, str(self.settings.inbox), str(self.settings.output),
            self.settings.plugin_timeout, self.log_level, self.settings.worker_memory_mb,
        ))

    def run(self) -> int:
        lock = StateLock(self.settings.state)
        if not lock.acquire():
            raise AlreadyRunning(
                f"Another ForgeSyte daemon already holds the state folder {self.settings.state}."
            )
        conditions.publish_to(lambda items: lock.update(conditions=items))  # `doctor` reads them
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        # Repairs what provably loses nothing; StateError (run exits 3) when the state is damaged.
        self.store = open_daemon_store(self.settings.state, self.settings.output)
        self.scanner = ThreadPoolExecutor(1, thread_name_prefix="forgesyte-scan")
        self.intake = Intake(self.settings, self.inbox, self.store,
                             scan_dir=lambda key: self.scanner.submit(self._scan_into_queue, key))
        self.executor: Executor | None = None
        self.scheduler: Scheduler | None = None
        self.watcher = InboxWatcher(
            self.inbox, self.selection, self.settings.polling, self.settings.polling_interval
        )
        try:
            self.executor = self._executor()
            self.scheduler = Scheduler(self.settings, self.store, self.results, self.inbox,
                                       self.executor, resettle=self.intake.observe)
            from forgesyte.daemon.why import live_view  # `forgesyte why` asks the intake through this
            self.scheduler.live = lambda key: live_view(self.intake, key, paused=self._inbox_missing,
                                                        next_scan=self._next_scan)
            self.scheduler.recover()
            self.watcher.start()
            self._start_scan()
            runs_on = (f"jobs on the Dask cluster at {self.settings.scheduler}" if self.settings.scheduler
                       else f"{self.settings.workers} workers")
            log.info("ForgeSyte %s started: %s, plugins %s", __version__, runs_on,
                     ",".join(self.settings.plugins))
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
            conditions.publish_to(None)
            lock.release()
        failed = self.scheduler.failed_this_run if self.scheduler else 0
        return 1 if (self.once and failed) else 0

    def _status_text(self) -> str:
        counts = self.store.counts()
        return ("Watching {inbox}: {pending} pending, {running} running, {completed} completed, "
                "{failed} failed").format(inbox=self.settings.inbox, **counts)

    def _drain_running(self) -> None:
        """A graceful stop: no new work; running jobs get `stop_grace` seconds to finish.
        Whatever is still running then goes back to pending in _shutdown."""
        if self.executor is None:
            return
        self.notifier.stopping(f"Stopping: {len(self.executor.running())} running jobs finishing")
        self.watcher.stop()
        running = len(self.executor.running())
        if running and not self._stop_now and self.settings.stop_grace > 0:
            again = (" Press Ctrl-C again to stop at once (they go back to pending)."
                     if self._stop_signal == signal.SIGINT else "")
            log.warning("finishing %d running job%s (up to %g s) before stopping.%s", running,
                        "" if running == 1 else "s", self.settings.stop_grace, again)
        deadline = time.monotonic() + self.settings.stop_grace
        while self.executor.running() and time.monotonic() < deadline and not self._stop_now:
            for event in self.executor.poll(min(TICK * 4, max(0.0, deadline - time.monotonic()))):
                self.scheduler.apply(event)
            self.scheduler.flush()

    def _shutdown(self) -> None:
        self.watcher.close()
        self.intake.close()
        self.scanner.shutdown(wait=False, cancel_futures=True)
        if self.executor is not None:
            interrupted = self.executor.shutdown()
            if self.scheduler is not None:
                self.scheduler.interrupted(interrupted)
        try:
            self.store.close()
        except OSError as exc:
            log.error("could not write the job store at stop (%s)", exc)
        log.info("stopped")

    # -- the loop ------------------------------------------------------------
    def _loop(self) -> None:
        scheduler = self.scheduler
        while not self.stopping:
            scheduler.flush()
            self._maintain()
            scheduler.retention()
            self._systemd()
            if not self._inbox_missing:
                self.intake.drain(self.watcher.events)
                for job_id, created in self.intake.step():
                    scheduler.add(job_id, created)
            mailbox.serve(self.settings.state, scheduler.handle_request)
            scheduler.paused = self._inbox_missing
            scheduler.dispatch()
            # Sleep in poll only as long as the intake has nothing to do (a backlog: not at all).
            hint = None if self._inbox_missing else self.intake.wait_hint()
            for event in self.executor.poll(TICK if hint is None else min(TICK, hint)):
                scheduler.apply(event)
            if self.once and self._drained():
                break

    def _drained(self) -> bool:
        return (
            self._scan_future is not None and self._scan_future.done()
            and self.watcher.events.empty() and self.intake.idle and self.scheduler.idle
        )

    def _systemd(self) -> None:
        healthy = (self._inbox_missing or self.watcher.healthy()) and self.executor.healthy()
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
            from forgesyte.preflight import check_plugins, summary  # the same checks as `run`

            findings = check_plugins(new, available)
            if findings.errors:
                raise ConfigError(summary(findings.errors))
            for warning in findings.warnings:
                log.warning("reload: %s", warning)
        except (ConfigError, DiscoveryFailed) as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            self.notifier.ready(self._status_text())
            return
        fixed = ("inbox", "output", "state", "workers", "polling", "worker_memory_mb", "scheduler")
        changed = [name for name in fixed if getattr(new, name) != getattr(self.settings, name)]
        if changed:
            log.warning("reload: %s can only change with a restart; keeping the running values",
                        ", ".join(changed))
            new = new.with_overrides(**{name: getattr(self.settings, name) for name in fixed})
        self.settings = new
        self.selection.update(new.video_extensions, new.ignore_patterns)
        self.intake.reconfigure(new)
        self.scheduler.reconfigure(new)
        pool = getattr(self.executor, "pool", None)
        if pool is not None:
            pool.plugin_timeout = new.plugin_timeout
        reconfigure = getattr(self.executor, "reconfigure", None)  # the cluster's marker and limits
        if reconfigure is not None:
            reconfigure(new)
        log.info("configuration reloaded: plugins %s, %d rules", ",".join(new.plugins), len(new.rules))
        self.notifier.ready(self._status_text())
        self._start_scan(force=True)  # new patterns may take files that were ignored

    def _inbox_available(self) -> bool:
        if not os.path.isdir(self.settings.inbox):
            return False
        return not self._inbox_was_mount or os.path.ismount(self.settings.inbox)

    def _maintain(self) -> None:
        present = self._inbox_available()
        if not present:  # logged once, then a reminder every few minutes (conditions.py)
            self._inbox_gone.report(f"the inbox {self.settings.inbox} is gone (unmounted?); intake paused "
                                    "until it returns; no job is failed or re-queued because of it")
        if not present and not self._inbox_missing:
            self._inbox_missing = True
            self.watcher.stop()
            self.intake.pause()
        elif present and self._inbox_missing:
            self._inbox_missing = False
            self._inbox_gone.clear(f"the inbox {self.settings.inbox} is back; resuming intake")
            self.watcher.start()
            self._start_scan(force=True)  # the scan cut short by pause() may not have ended yet
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
        """In the scan thread: keys go to the intake's bounded feed, which waits while the
        intake is busy, so a huge inbox is never listed into memory at once."""
        epoch = self.intake.feed_epoch
        for key in scan(self.inbox, self.selection, under, coverage=self.watcher.coverage):
            if not self.intake.feed(key, epoch):
                return  # stopping, or the inbox went away (a new scan follows its return)
