"""Jobs on a Dask cluster: the second Executor (see executor.py), picked by `run --scheduler`.

The daemon stays the only writer of the job store: it claims a job, sends a
Dask task carrying ids, relative keys, the chain and its options (never a
path), and records the outcome the task returns. The task itself runs in a
`forgesyte worker` (clusterworker.py), which only supervises a warm chain
process of its machine.

What Dask decides and what the daemon decides:

* Retries are the daemon's. Tasks are submitted with `retries=0`; a task
  that Dask re-runs after its worker died finds that attempt's claim and
  reports the worker lost; a task that ends in `KilledWorker` (Dask's
  `allowed-failures`) is reported lost too. A lost attempt is a transient
  failure to the scheduler: back to pending with an attempt counted, or
  failed after `max_attempts`.
* Routing: each task needs one unit of the resource `forgesyte-<cluster id>`,
  which only `forgesyte worker`s whose folders carry this daemon's marker
  advertise (one unit per job slot). A plain `dask worker`, or another
  daemon's worker on the same scheduler, never gets our jobs.
* A scheduler that goes away pauses dispatch: no free slots, jobs stay
  pending, one loud log line (then a reminder every few minutes). Jobs that
  were running go back to pending without using an attempt; the workers kill
  their chain processes when they lose the scheduler, so nothing runs twice.
  A background thread reconnects; dispatch resumes when it succeeds.
* `cancel` releases the Dask task; the worker kills the chain process when
  Dask releases a running task (clusterworker.Supervision).
* Outcomes carry the attempt token `run`; the scheduler drops any outcome
  whose run is not the job's current one, and this executor drops any second
  outcome for an attempt it already answered (first answer wins).
* Files follow the same decision: an attempt writes only into its own staging
  folder, and the outcome this executor accepts is the one whose files it
  moves into the job's folder (clusterstage.py). A stale attempt that finishes
  late changes neither the results document nor an artifact.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from forgesyte import __version__
from forgesyte.config import ConfigError, Settings
from forgesyte.daemon import clustermarker, clusterstage
from forgesyte.daemon.clusterworker import TOPIC, lost, requeue, resource_name, run_task, tls_problem
from forgesyte.daemon.executor import Done, Event, Progress, Task

log = logging.getLogger("forgesyte.cluster")

CONNECT_TIMEOUT = 5.0  # seconds per attempt to reach the scheduler
REFRESH = 0.5  # seconds between looks at the cluster's workers
REMIND = 300.0  # seconds between reminders that the scheduler is still unreachable
FETCH_TIMEOUT = 10.0  # seconds to fetch an outcome the worker's "done" event did not bring
SWEEP_EVERY = 600.0  # seconds between removals of settled claims (kept at least that long)

GONE = "The Dask scheduler went away while the job ran; it goes back to pending."


@dataclass(eq=False)
class Flight:
    """One attempt on the cluster: its task, its Dask future, the worker running it."""

    task: Task
    future: Any = None
    worker: str | None = None
    answered: bool = False  # an outcome is queued (the worker's "done" event or ours)
    submitted: float = field(default_factory=time.monotonic)

    @property
    def job_id(self) -> str:
        return self.task["job_id"]

    @property
    def run(self) -> int:
        return int(self.task.get("run", 0))


class DaskExecutor:
    def __init__(self, settings: Settings, log_level: int = logging.INFO,
                 available: dict[str, dict[str, Any]] | None = None):
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise ConfigError("Running jobs on a Dask cluster needs the cluster extra: "
                              "pip install 'forgesyte[cluster]'.") from None
        problem = tls_problem(settings.scheduler, "client")
        if problem:
            raise ConfigError(problem)
        self.settings = settings
        self.address = settings.scheduler
        self.identity = self._write_marker(available)
        clustermarker.clear_claims(settings.output)
        clusterstage.sweep(settings.output, 0, set())  # the previous daemon's attempts cannot finish
        self.resource = resource_name(self.identity.cluster)
        # queue.Queue, not SimpleQueue: CPython 3.11's SimpleQueue.get(timeout) blocks forever
        # when a signal (the daemon's SIGTERM) interrupts it just past its deadline.
        self._events: queue.Queue = queue.Queue()
        self._flights: dict[str, Flight] = {}
        self._lock = threading.Lock()
        self._client = None
        self._up = False
        self._capacity = 0
        self._worker_info: dict[str, Any] = {}
        self._leaving: set[str] = set()  # workers that said they stop (refusal, shutdown)
        self._finished: list[Any] = []  # futures of answered attempts, to release (see submit)
        self._finished_since = 0.0
        self._down_since: float | None = None
        self._last_reminder = 0.0
        self._next_sweep = time.monotonic() + SWEEP_EVERY
        self._stop = threading.Event()
        # Client calls that wait for the scheduler (cancel) run here, never on the daemon's
        # loop; a daemon thread, so a call stuck on a dead scheduler cannot hold up exit.
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._call_loop, name="forgesyte-cluster-call", daemon=True).start()
        self._thread = threading.Thread(target=self._maintain, name="forgesyte-cluster", daemon=True)
        self._thread.start()

    # -- the marker ------------------------------------------------------------------
    def _write_marker(self, available: dict[str, dict[str, Any]] | None) -> clustermarker.Identity:
        """Workers compare their folders, version and plugins with this (clustermarker.py)."""
        if available is None:
            from forgesyte.plugins.registry import probe

            available = probe()
        self._versions = {name: (available.get(name) or {}).get("version")
                          for name in sorted(self.settings.all_plugin_names())}
        identity = clustermarker.write(self.settings.inbox, self.settings.output, __version__,
                                       self._versions, self.settings.plugin_timeout,
                                       self.settings.worker_memory_mb)
        log.info("cluster %s: marker written in %s; workers must see it at their own mount points",
                 identity.cluster, clustermarker.marker_path(self.settings.output))
        return identity

    def reconfigure(self, settings: Settings) -> None:
        """SIGHUP: new plugins, timeout; workers check the new marker before their next job."""
        self.settings = settings
        self.identity = self._write_marker(None)

    def _expect(self, task: Task) -> dict[str, Any]:
        return {"cluster": self.identity.cluster, "version": __version__,
                "plugins": {name: self._versions.get(name) for name in task["plugins"]},
                "plugin_timeout": self.settings.plugin_timeout,
                "worker_memory_mb": self.settings.worker_memory_mb}

    # -- the Executor protocol (the daemon's loop thread) -------------------------------
    def free_slots(self) -> int:
        client = self._client
        # "connecting": the client lost the scheduler (and is cancelling our futures) before
        # the maintenance thread noticed; dispatch nothing into it.
        if not self._up or client is None or client.status != "running":
            return 0
        with self._lock:
            return max(0, self._capacity - len(self._flights))

    def submit(self, task: Task) -> None:
        task = {**task, "fence": True}  # write into the attempt's staging folder: clusterstage.py
        flight = Flight(task)
        with self._lock:
            self._flights[flight.job_id] = flight
        client = self._client
        try:
            future = client.submit(run_task, task, self._expect(task), key=f"forgesyte-{flight.job_id}-{flight.run}",
                                   pure=False, resources={self.resource: 1}, retries=0)
        except Exception as exc:  # the client closed between free_slots() and here
            self._events.put(("done", flight, requeue(f"The job could not be handed to the Dask scheduler ({exc}).")))
            return
        flight.future = future
        future.add_done_callback(lambda fut, flight=flight: self._on_done(flight, fut))
        self._release_finished()  # after the submit: see _release_finished

    def _release_finished(self) -> None:
        """Let Dask forget finished tasks. Deferred until the next submit (or a quiet moment):
        Dask batches what a client sends for 10 ms and what the scheduler sends a worker
        for 5 ms, so a release sent just before the next submit would hold that submit
        back by up to 15 ms; sent just after, it rides in the same batches."""
        futures, self._finished = self._finished, []
        for future in futures:
            future.release()

    def poll(self, timeout: float) -> list[Event]:
        if self._finished and time.monotonic() - self._finished_since > 0.1:
            self._release_finished()
        try:
            items = [self._events.get(timeout=max(0.0, timeout))]
        except queue.Empty:
            return []
        while True:
            try:
                items.append(self._events.get_nowait())
            except queue.Empty:
                break
        events: list[Event] = []
        for item in items:
            if item[0] == "done":
                event = self._done(item[1], item[2])
            else:
                event = self._topic(item[1])
            if event is not None:
                events.append(event)
        return events

    def cancel(self, job_id: str) -> bool:
        with self._lock:
            flight = self._flights.get(job_id)
        if flight is None:
            return False
        flight.answered = True
        self._events.put(("done", flight, {"status": "failed", "output": None,
                                           "error": "Cancelled.", "cancelled": True}))
        self._release(flight)
        return True

    def running(self) -> list[str]:
        with self._lock:
            return list(self._flights)

    def healthy(self) -> bool:
        return self._thread.is_alive()

    def shutdown(self) -> list[str]:
        """Stop everything; the running jobs' tasks are released, so workers kill their chains."""
        self._stop.set()
        with self._lock:
            flights = list(self._flights.values())
            self._flights.clear()
        client, self._client, self._up = self._client, None, False
        if client is not None:
            futures = [f.future for f in flights if f.future is not None]

            def close() -> None:
                try:
                    if futures:
                        client.cancel(futures)
                    client.close(timeout=3)
                except Exception as exc:
                    log.debug("closing the Dask client: %s", exc)

            closer = threading.Thread(target=close, name="forgesyte-cluster-close", daemon=True)
            closer.start()
            closer.join(timeout=10)
        self._calls.put(None)
        self._thread.join(timeout=5)
        return [f.job_id for f in flights]

    def _call_loop(self) -> None:
        while True:
            call = self._calls.get()
            if call is None:
                return
            try:
                call()
            except Exception as exc:  # a cancel that could not reach the scheduler
                log.debug("cluster call failed: %s", exc)

    # -- outcomes ------------------------------------------------------------------------
    def _done(self, flight: Flight, outcome: dict[str, Any]) -> Done | None:
        """The first outcome of an attempt wins; later ones (a late worker) are dropped.
        The winner's staged files move into place (still in flight meanwhile, so the
        sweep leaves them alone); any other attempt's files never do."""
        with self._lock:
            if self._flights.get(flight.job_id) is not flight:
                return None
        clustermarker.settle(self.settings.output, flight.job_id, flight.run)
        outcome = self._publish(flight, outcome)
        with self._lock:
            del self._flights[flight.job_id]
        if outcome.get("leaving"):  # no more jobs for it, even before the scheduler knows
            with self._lock:
                self._leaving.add(str(outcome["leaving"]))
                self._capacity = self._count(self._worker_info)
        if outcome.get("refused"):
            log.error("worker %s refused job %s and stops: %s", outcome.get("leaving", "?"),
                      flight.job_id, outcome["refused"])
        elif outcome.get("lost"):
            log.warning("job %s: %s", flight.job_id, outcome.get("error"))
        if flight.future is not None:
            if not self._finished:
                self._finished_since = time.monotonic()
            self._finished.append(flight.future)
        return Done(flight.job_id, flight.run, outcome)

    def _publish(self, flight: Flight, outcome: dict[str, Any]) -> dict[str, Any]:
        output, job_id, run = self.settings.output, flight.job_id, flight.run
        outcome = clusterstage.accept(output, job_id, run, flight.task["folder"], outcome)
        self._calls.put(lambda: clusterstage.discard(output, job_id, run))  # off the loop thread
        return outcome

    def _topic(self, message: Any) -> Progress | None:
        try:
            kind, job_id, run = message[0], message[1], int(message[2])
        except (TypeError, ValueError, IndexError):
            return None
        with self._lock:
            flight = self._flights.get(job_id)
        if flight is None or flight.run != run:
            return None
        if kind == "start":
            flight.worker = str(message[3])
            log.debug("job %s: started on %s", job_id, flight.worker)
        elif kind == "progress":
            return Progress(job_id, run, int(message[3]), message[4])
        return None

    def _on_topic(self, event: Any) -> None:
        """The client's event loop: a worker's message. A "done" marks its flight answered
        at once, so the future's own callback need not fetch the result."""
        message = event[1]
        if isinstance(message, (list, tuple)) and len(message) >= 4 and message[0] == "done":
            with self._lock:
                flight = self._flights.get(message[1])
            if flight is not None and flight.run == message[2] and isinstance(message[3], dict):
                flight.answered = True
                self._events.put(("done", flight, message[3]))
            return
        self._events.put(("topic", message))

    def _on_done(self, flight: Flight, future: Any) -> None:
        """Dask's callback thread: the task ended. Usually its outcome came already as the
        worker's "done" event; otherwise fetch it (off this shared thread) or make one."""
        if flight.answered:
            return
        if future.status == "finished":
            threading.Thread(target=self._fetch, args=(flight, future), daemon=True,
                             name="forgesyte-cluster-fetch").start()
            return
        from distributed.scheduler import KilledWorker

        if future.status == "error":
            try:
                exc = future.exception(timeout=FETCH_TIMEOUT)
            except Exception as error:  # the scheduler went away meanwhile
                exc = error
            if isinstance(exc, KilledWorker):
                outcome = lost("The cluster workers running this job kept dying (Dask gave up on it).")
            else:
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no message"
                outcome = {"status": "failed", "output": None,
                           "error": f"The cluster could not run the job: {type(exc).__name__}: {detail}."}
        else:  # cancelled: by cancel()/shutdown() (answered already) or the scheduler went away
            outcome = requeue(GONE)
        self._events.put(("done", flight, outcome))

    def _fetch(self, flight: Flight, future: Any) -> None:
        try:
            outcome = future.result(timeout=FETCH_TIMEOUT)
        except Exception as exc:  # the worker holding it left, the connection dropped
            if flight.answered:
                return
            outcome = requeue(f"The job's outcome could not be fetched from the cluster ({type(exc).__name__}).")
        self._events.put(("done", flight, outcome))

    def _release(self, flight: Flight) -> None:
        """Release the task off the loop thread (a dead scheduler must not block the daemon);
        a running task's worker then kills its chain process."""
        future = flight.future
        if future is not None:
            self._calls.put(future.cancel)

    # -- the connection (its own thread) ----------------------------------------------------
    def _maintain(self) -> None:
        while not self._stop.is_set():
            client = self._client
            if client is not None and client.status != "running":
                self._went_down(client)
                client = None
            if client is None:
                client = self._connect()
                if client is None:
                    self._stop.wait(1.0)
                    continue
            self._refresh(client)
            if time.monotonic() >= self._next_sweep:
                self._next_sweep = time.monotonic() + SWEEP_EVERY
                clustermarker.sweep_claims(self.settings.output, SWEEP_EVERY)
                with self._lock:
                    keep = {f"{f.job_id}.{f.run}" for f in self._flights.values()}
                clusterstage.sweep(self.settings.output, SWEEP_EVERY, keep)
            self._stop.wait(REFRESH)

    def _connect(self):
        from distributed import Client

        try:
            client = Client(self.address, timeout=CONNECT_TIMEOUT, set_as_default=False,
                            name="forgesyte-daemon")
        except Exception as exc:
            now = time.monotonic()
            if self._down_since is None:
                self._down_since = self._last_reminder = now
                log.error("the Dask scheduler at %s is unreachable (%s): dispatch is paused and jobs "
                          "stay pending until it answers", self.address, exc)
            elif now - self._last_reminder >= REMIND:
                self._last_reminder = now
                log.error("the Dask scheduler at %s is still unreachable after %.0f s; jobs stay pending",
                          self.address, now - self._down_since)
            return None
        if self._stop.is_set():
            client.close()
            return None
        client.subscribe_topic(TOPIC, self._on_topic)
        self._client = client
        self._refresh(client)
        self._up = True
        if self._down_since is not None:
            log.warning("the Dask scheduler at %s is back after %.0f s; dispatch resumes",
                        self.address, time.monotonic() - self._down_since)
        else:
            log.info("connected to the Dask scheduler at %s", self.address)
        self._down_since = None
        return client

    def _went_down(self, client) -> None:
        self._up = False
        self._client = None
        self._down_since = self._last_reminder = time.monotonic()
        with self._lock:
            flights = list(self._flights.values())
        log.error("lost the Dask scheduler at %s: dispatch is paused; %d running jobs go back to "
                  "pending (not counted as attempts)", self.address, len(flights))
        for flight in flights:
            flight.answered = True
            self._events.put(("done", flight, requeue(GONE)))
        try:
            client.close(timeout=2)
        except Exception:
            pass

    def _count(self, workers: dict[str, Any]) -> int:
        return int(sum((w.get("resources") or {}).get(self.resource, 0) for address, w in workers.items()
                       if w.get("status", "running") == "running" and address not in self._leaving))

    def _refresh(self, client) -> None:
        """How many job slots the cluster has; whether a running job's worker left it;
        and, with no slot at all, jobs waiting inside Dask go back to pending."""
        try:
            workers = dict(client.scheduler_info(n_workers=-1).get("workers", {}))
        except Exception as exc:
            log.debug("scheduler_info failed: %s", exc)
            return
        with self._lock:
            self._leaving &= set(workers)
            self._worker_info = workers
            capacity = self._count(workers)
            changed, self._capacity = capacity != self._capacity, capacity
            orphans = [f for f in self._flights.values()
                       if not f.answered and f.worker and f.worker not in workers]
            stranded = [f for f in self._flights.values() if not f.answered and not f.worker] if not capacity else []
            for flight in orphans + stranded:
                flight.answered = True
        if changed:
            mine = sum(1 for w in workers.values() if (w.get("resources") or {}).get(self.resource))
            log.log(logging.WARNING if capacity == 0 else logging.INFO, "cluster %s: %d job slots on %d workers%s",
                    self.identity.cluster, capacity, mine,
                    "; jobs wait in pending for a forgesyte worker" if capacity == 0 else "")
        for flight in orphans:
            self._events.put(("done", flight, lost(
                f"The cluster worker {flight.worker} running this job went away before it finished.")))
            self._release(flight)
        for flight in stranded:
            self._events.put(("done", flight, requeue("No forgesyte worker can take the job now; "
                                                      "it waits in pending.")))
            self._release(flight)
