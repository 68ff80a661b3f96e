"""The seam between scheduling and running: something that runs jobs.

The scheduler hands an executor tasks and reads back events; it never knows
whether the plugins run in local worker processes (`LocalExecutor`) or on a
Dask cluster (`forgesyte.daemon.cluster`). A task carries ids, relative keys,
the plugin chain and its options, never an absolute path: whoever runs it
resolves the keys against its own inbox and output roots.

    task  = {"job_id", "run", "input", "folder", "plugins", "options", "record"}
    Progress(job_id, run, percent, plugin)
    Done(job_id, run, outcome)   outcome = {"status", "output", "error", "transient", ...}

`run` is the job's attempt token (it grows with every claim and never goes
back): an event whose run is not the job's current one is stale and ignored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("forgesyte.executor")

Task = dict[str, Any]


@dataclass
class Progress:
    job_id: str
    run: int
    percent: int
    plugin: str | None = None


@dataclass
class Done:
    job_id: str
    run: int
    outcome: dict[str, Any] = field(default_factory=dict)


Event = Progress | Done


class Executor(Protocol):
    def free_slots(self) -> int:
        """How many more tasks it takes now (0 while unavailable)."""

    def submit(self, task: Task) -> None:
        """Start a task; only when free_slots() > 0."""

    def poll(self, timeout: float) -> list[Event]:
        """Wait up to `timeout` s for progress and outcomes (and notice deaths, timeouts)."""

    def cancel(self, job_id: str) -> bool:
        """Stop a running task now; its Done (failed, 'Cancelled.') follows from poll()."""

    def running(self) -> list[str]:
        """Ids of the jobs it is running."""

    def healthy(self) -> bool:
        """False when it needs help (systemd's watchdog stops being fed)."""

    def shutdown(self) -> list[str]:
        """Stop everything; returns the ids of jobs that were still running."""


class LocalExecutor:
    """Worker processes on this machine (forgesyte.daemon.workers.WorkerPool)."""

    def __init__(self, pool):
        self.pool = pool

    def free_slots(self) -> int:
        return self.pool.idle

    def submit(self, task: Task) -> None:
        self.pool.submit(task)

    def poll(self, timeout: float) -> list[Event]:
        return self.pool.poll(timeout)

    def cancel(self, job_id: str) -> bool:
        return self.pool.cancel(job_id)

    def running(self) -> list[str]:
        return self.pool.busy_jobs

    def healthy(self) -> bool:
        return self.pool.healthy()

    def shutdown(self) -> list[str]:
        return self.pool.shutdown()
