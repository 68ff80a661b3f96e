"""What runs inside a `forgesyte worker` process: a Dask worker whose tasks only supervise.

Dask cannot interrupt a running task (threads cannot be stopped), and a task
that segfaults takes its Dask worker down, then the next one, until
`KilledWorker`. So a Dask task here never runs plugin code: it hands the job
to a warm chain process of this machine's `WorkerPool` (the same isolation as
local workers: own process group, subreaper host, timeout, memory limit, no
orphans) and waits for the outcome. Plugins resolve the task's relative keys
against this worker's own inbox and output mounts; the results document and
artifacts land in the shared output folder; only the outcome goes back.

Threads: Dask runs `run_task` in its executor threads; the pool belongs to
one thread of its own (`ChainHost._loop`), because the pool spawns processes
and a process's parent-death signal fires when the *thread* that spawned it
ends. Everything else talks to that thread through a queue and a wake pipe.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from forgesyte.conditions import Condition
from forgesyte.daemon import clustermarker
from forgesyte.daemon.clustermarker import NotShared
from forgesyte.daemon.executor import Done, Progress
from forgesyte.daemon.workers import WorkerPool

log = logging.getLogger("forgesyte.worker")

TOPIC = "forgesyte"  # Dask event topic: ("start"|"progress"|"done", job_id, run, ...)

LOST = "The cluster worker running this job was lost before it finished."
QUIET = 0.5  # seconds a job runs before its worker sends more than its outcome

_HOST: ChainHost | None = None  # set by `forgesyte worker`; tasks find their host here


def requeue(error: str, **extra: Any) -> dict[str, Any]:
    """An outcome meaning: not run, not an attempt; the daemon puts the job back."""
    return {"status": "failed", "output": None, "error": error, "requeue": True, **extra}


def lost(error: str = LOST) -> dict[str, Any]:
    """An outcome meaning: an attempt was used up by a worker that went away.
    Transient, so the daemon's max_attempts decides between a retry and failing."""
    return {"status": "failed", "output": None, "error": error, "transient": True, "lost": True}


def run_task(task: dict[str, Any], expect: dict[str, Any]) -> dict[str, Any]:
    """The Dask task: check, claim, run the chain in a warm process, return the outcome."""
    host = _HOST
    if host is None:  # only a `forgesyte worker` advertises the resource these tasks need
        return requeue("A Dask worker that is not a forgesyte worker was given a job.")
    outcome = host.run(task, expect)
    # Pushed to the daemon at once through the scheduler: it needs neither a fetch of the
    # task's result nor this worker still being there (a refusing worker leaves next).
    from distributed import get_worker

    get_worker().log_event(TOPIC, ["done", task["job_id"], int(task.get("run", 0)), outcome])
    return outcome


class ChainHost:
    """The warm chain processes of this `forgesyte worker`, shared by its Dask task threads."""

    def __init__(self, inbox: Path, output: Path, slots: int, identity: clustermarker.Identity,
                 version: str, plugins: dict[str, dict[str, Any]], log_level: int = logging.INFO):
        self.inbox, self.output = Path(inbox), Path(output)
        self.slots = slots
        self.version = version
        self.plugins = plugins  # this machine's, from probe(): name -> {"version", "error", ...}
        self.identity = identity
        self.log_level = log_level
        self.fatal: str | None = None  # set when this worker must stop: exit 2 with this sentence
        self.stopping = False
        self.address = "?"
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._waiters: dict[tuple[str, int], queue.SimpleQueue] = {}
        self._keys: dict[str, tuple[str, int]] = {}  # Dask key -> (job id, run)
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._backlog: list[dict[str, Any]] = []
        self._closed = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="forgesyte-chains", daemon=True)
        self._thread.start()
        self._ready.wait(30)

    # -- Dask task threads ---------------------------------------------------------
    def run(self, task: dict[str, Any], expect: dict[str, Any]) -> dict[str, Any]:
        from distributed import get_worker

        job_id, run = task["job_id"], int(task.get("run", 0))
        if self.fatal or self.stopping:
            return requeue(f"The worker at {self.address} is stopping.", leaving=self.address)
        problem = self.check(expect)
        if problem:
            self.refuse(problem)
            return requeue(problem, refused=problem, leaving=self.address)
        if not clustermarker.claim(self.output, job_id, run):
            log.warning("job %s: attempt %d already ran on a worker that was lost; "
                        "reporting it lost to the daemon", job_id, run)
            return lost()
        worker = get_worker()
        try:
            key = worker.get_current_task()
        except Exception:  # pragma: no cover - outside a task
            key = None
        waiter: queue.Queue = queue.Queue()  # not SimpleQueue: see cluster.py
        with self._lock:
            self._waiters[(job_id, run)] = waiter
            if key is not None:
                self._keys[key] = (job_id, run)
        limits = {"plugin_timeout": float(expect.get("plugin_timeout") or self.identity.plugin_timeout),
                  "memory_mb": expect.get("worker_memory_mb")}
        self._request(("submit", task, limits))
        log.info("job %s %s: running here (attempt token %d)", job_id, task.get("input"), run)
        # Events cost the scheduler and the daemon CPU; a job done within QUIET seconds
        # sends only its outcome. A longer one says where it runs (the daemon notices when
        # that worker leaves) and then its progress.
        started, latest, announced = time.monotonic(), None, False
        try:
            while True:
                wait = None if announced else max(0.0, started + QUIET - time.monotonic())
                try:
                    event = waiter.get(timeout=wait)
                except queue.Empty:
                    event = None
                if not announced and (event is None or time.monotonic() >= started + QUIET):
                    announced = True
                    worker.log_event(TOPIC, ["start", job_id, run, worker.address])
                    if latest is not None:
                        worker.log_event(TOPIC, ["progress", job_id, run, latest.percent, latest.plugin])
                if event is None:
                    continue
                if isinstance(event, Progress):
                    if announced:
                        worker.log_event(TOPIC, ["progress", job_id, run, event.percent, event.plugin])
                    else:
                        latest = event
                    continue
                outcome = dict(event.outcome)
                if outcome.get("cancelled") and (self.stopping or self.fatal):
                    return requeue(f"The worker at {self.address} was stopped while the job ran.",
                                   leaving=self.address)
                return outcome
        finally:
            with self._lock:
                self._waiters.pop((job_id, run), None)
                if key is not None:
                    self._keys.pop(key, None)

    def check(self, expect: dict[str, Any]) -> str | None:
        """Before each job: are our folders still the daemon's, and our software its software?"""
        try:
            identity = clustermarker.read(self.inbox, self.output)
        except NotShared as exc:
            return str(exc)
        if identity.cluster != expect.get("cluster"):
            return (f"The output folder {self.output} now belongs to cluster {identity.cluster}, "
                    f"not to the daemon that sent this job ({expect.get('cluster')}).")
        return clustermarker.software_problem(
            str(expect.get("version")), dict(expect.get("plugins") or {}), self.version, self.plugins)

    def refuse(self, problem: str) -> None:
        """This worker cannot take jobs: stop taking them at once, then stop (exit 2)."""
        if self.fatal is None:
            self.fatal = problem
            log.error("%s This worker stops taking jobs.", problem)

    def kill_key(self, key: str) -> None:
        """Dask released a running task (cancel, client gone): kill its chain process."""
        with self._lock:
            ids = self._keys.get(key)
        if ids is not None:
            log.info("job %s: cancelled by the cluster; stopping its plugins", ids[0])
            self._request(("kill", ids[0]))

    def kill_all(self) -> None:
        with self._lock:
            jobs = [job_id for job_id, _ in self._waiters]
        for job_id in jobs:
            self._request(("kill", job_id))

    def busy(self) -> int:
        with self._lock:
            return len(self._waiters)

    def close(self) -> None:
        self._request(("close", None))
        self._thread.join(timeout=30)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    # -- the pool's own thread -------------------------------------------------------
    def _request(self, item: tuple) -> None:
        self._requests.put(item)
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _loop(self) -> None:
        pool = WorkerPool(self.slots, str(self.inbox), str(self.output), self.identity.plugin_timeout,
                          self.log_level, self.identity.worker_memory_mb)
        self._ready.set()
        try:
            while True:
                waitables: list[Any] = [h.conn for h in pool.handles]
                waitables += [h.process.sentinel for h in pool.handles]
                try:
                    wait(waitables + [self._wake_r], timeout=0.1)
                except (OSError, ValueError):
                    pass
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
                if not self._serve_requests(pool):
                    return
                for event in pool.poll(0):
                    with self._lock:
                        waiter = self._waiters.get((event.job_id, event.run))
                    if waiter is not None:
                        waiter.put(event)
                self._start_backlog(pool)
        finally:
            pool.shutdown()

    def _serve_requests(self, pool: WorkerPool) -> bool:
        while True:
            try:
                kind, value, *rest = self._requests.get_nowait()
            except queue.Empty:
                return True
            if kind == "close":
                return False
            if kind == "submit":
                self._apply_limits(pool, rest[0])
                self._backlog.append(value)
            elif kind == "kill" and not pool.cancel(value):  # not started yet: answer for it
                for task in [t for t in self._backlog if t["job_id"] == value]:
                    self._backlog.remove(task)
                    self._answer(Done(task["job_id"], int(task.get("run", 0)),
                                      {"status": "failed", "output": None,
                                       "error": "Cancelled.", "cancelled": True}))

    def _start_backlog(self, pool: WorkerPool) -> None:
        while self._backlog and pool.idle > 0:
            pool.submit(self._backlog.pop(0))

    def _answer(self, event: Done) -> None:
        with self._lock:
            waiter = self._waiters.get((event.job_id, event.run))
        if waiter is not None:
            waiter.put(event)

    @staticmethod
    def _apply_limits(pool: WorkerPool, limits: dict[str, Any]) -> None:
        """The daemon's limits travel with each job (a reload may change the timeout)."""
        pool.plugin_timeout = limits["plugin_timeout"]
        memory = limits.get("memory_mb")
        if memory != pool.memory_mb:
            # A new address-space limit applies to processes started from now on:
            # restart the idle ones (the limit is set when a chain process starts).
            pool.memory_mb = memory
            for handle in [h for h in pool.handles if h.task is None]:
                pool._replace(handle)


# -- the `forgesyte worker` process ---------------------------------------------------

def _plugin_class():
    from distributed import WorkerPlugin

    class Supervision(WorkerPlugin):
        """Makes Dask's cancel real: a released running task's chain process is killed;
        a Dask worker that closes (stop, lost scheduler) kills every chain it runs."""

        name = "forgesyte-supervision"

        def __init__(self, host: ChainHost):
            self.host = host

        def transition(self, key, start, finish, **kwargs):
            if start == "executing" and finish in ("released", "cancelled", "forgotten"):
                self.host.kill_key(key)

        def teardown(self, worker):
            self.host.kill_all()

    return Supervision


async def _serve(address: str, host: ChainHost, nprocs: int, resource: str, name: str | None) -> None:
    import asyncio
    import signal

    from distributed import Worker
    from distributed.core import Status

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    supervision = _plugin_class()
    announced_wait = False
    # Logged when it starts, as a reminder, and when it ends: never once per 2 s retry.
    unreachable = Condition("scheduler-unreachable", log, level=logging.ERROR)
    failures, first_failure = 0, 0.0
    while not stop.is_set() and host.fatal is None:
        worker = Worker(address, nthreads=nprocs, resources={resource: nprocs}, memory_limit=0,
                        name=name, plugins=(supervision(host),), dashboard=False)
        if not announced_wait and not failures:
            log.info("connecting to the Dask scheduler at %s", address)
        starting = asyncio.ensure_future(worker.start())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            await worker.close(timeout=5)
            break
        stopping.cancel()
        try:
            starting.result()
        except Exception as exc:
            failures, first_failure = failures + 1, first_failure or loop.time()
            unreachable.report(f"could not join the scheduler at {address} ({_root_cause(exc)}); "
                               "retrying every 2 s")
            await worker.close(timeout=5)
            await asyncio.sleep(2)
            continue
        host.address = worker.address
        announced_wait = False
        unreachable.clear(f"joined the scheduler at {address} after {failures} failed attempts "
                          f"({loop.time() - first_failure:.0f} s)")
        failures, first_failure = 0, 0.0
        log.info("ready: worker %s of scheduler %s, %d job slots, inbox %s, output %s",
                 worker.address, address, nprocs, host.inbox, host.output)
        print(f"ForgeSyte worker {worker.address} is running jobs for {address}", flush=True)
        while not stop.is_set() and host.fatal is None and worker.status not in (
                Status.closing, Status.closed, Status.failed):
            try:
                await asyncio.wait_for(stop.wait(), 0.2)
            except TimeoutError:
                pass
        if worker.status in (Status.closing, Status.closed, Status.failed):
            log.error("lost the Dask scheduler at %s; the jobs running here were stopped "
                      "(the daemon puts them back); reconnecting when it returns", address)
            await worker.close(timeout=5)
            announced_wait = True
            await asyncio.sleep(0.5)
            continue
        # A clean stop (or a refusal): take no new task, stop the running ones while
        # the scheduler can still hear their outcome (put back, not an attempt), then go.
        host.stopping = True
        try:
            worker.status = Status.paused
        except Exception:  # pragma: no cover - a closing worker
            pass
        host.kill_all()
        deadline = loop.time() + 5
        while (host.busy() or worker.state.executing_count) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await worker.close(timeout=10)
    host.stopping = True


def _root_cause(exc: BaseException) -> str:
    """Dask wraps the scheduler's answer ("name taken, w0") in "Worker failed to start."."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    return str(exc).strip().rstrip(".") or type(exc).__name__


class _SaidOnce(logging.Filter):
    """Dask's own line per failed join: `could not join the scheduler` says it, rate-limited."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Unable to connect to scheduler")


class _OwnClose(logging.Filter):
    """A heartbeat in flight when this worker closes itself (a clean stop, a refusal) fails
    with the connection Dask is closing: expected, not an error, and no traceback in the log."""

    def __init__(self, host: ChainHost):
        super().__init__()
        self.host = host

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.host.stopping and str(record.msg).startswith(
            "Failed to communicate with scheduler during heartbeat"))


def preflight(inbox: Path, output: Path) -> tuple[clustermarker.Identity, dict[str, dict[str, Any]]]:
    """At start: the daemon's identity from both folders' markers, and this machine's plugins
    (probed in a child process). Raises NotShared naming the folder, version or plugin."""
    from forgesyte import __version__
    from forgesyte.plugins.registry import probe

    identity = clustermarker.read(inbox, output)
    available = probe()
    problem = clustermarker.software_problem(identity.version, identity.plugins, __version__, available)
    if problem:
        raise NotShared(problem)
    return identity, available


def serve(address: str, inbox: Path, output: Path, nprocs: int, log_level: int,
          identity: clustermarker.Identity, available: dict[str, dict[str, Any]],
          name: str | None = None) -> int:
    """`forgesyte worker` after its preflight: serve jobs until stopped.

    Returns 0 after a clean stop; raises NotShared (exit 2) when this worker
    refused a job (its folders stopped being the daemon's, or the daemon's
    software changed) and stopped.
    """
    import asyncio

    from forgesyte import __version__

    global _HOST
    _quiet_dask(log_level)
    if not name:
        import socket

        name = f"forgesyte-{socket.gethostname()}-{os.getpid()}"
    host = ChainHost(inbox, output, nprocs, identity, __version__, available, log_level)
    _HOST = host
    closing = _OwnClose(host)
    logging.getLogger("distributed.worker").addFilter(closing)
    try:
        asyncio.run(_serve(address, host, nprocs, resource_name(identity.cluster), name))
    finally:
        logging.getLogger("distributed.worker").removeFilter(closing)
        host.close()
        _HOST = None
    if host.fatal:
        raise NotShared(host.fatal)
    log.info("stopped")
    return 0


def tls_problem(address: str, role: str) -> str | None:
    """For a tls:// scheduler address: one sentence when Dask's configuration does not give
    this process (`role`: "client" for the daemon, "worker" for a worker) the cluster's CA
    and a certificate and key it can load; None when it does, or for another scheme.

    Checked at start, as bad configuration (exit 2): the configuration cannot change while
    the process runs, so retrying every 2 s could never succeed. (A certificate that another
    CA signed loads fine here; only the scheduler can refuse it.)"""
    if not address.startswith("tls://"):
        return None
    import dask
    from distributed.security import Security

    for setting in ("ca-file", f"{role}.cert", f"{role}.key"):
        path = dask.config.get(f"distributed.comm.tls.{setting}", None)
        if isinstance(path, str) and "\n" not in path and not os.access(path, os.R_OK):
            return (f"The TLS file {path} (Dask setting distributed.comm.tls.{setting}) for the "
                    f"scheduler at {address} does not exist or is not readable by this user.")
    try:
        context = Security().get_connection_args(role).get("ssl_context")
    except (OSError, ValueError) as exc:  # a missing or unreadable file, a PEM that is not one
        return (f"The TLS certificate configured for the Dask scheduler at {address} cannot be "
                f"loaded: {str(exc).strip().rstrip('.')}.")
    if context is None:
        return (f"The scheduler address {address} needs TLS, but Dask's configuration gives this "
                f"{'daemon' if role == 'client' else 'worker'} no certificate: set "
                f"distributed.comm.tls.ca-file, distributed.comm.tls.{role}.cert and "
                f"distributed.comm.tls.{role}.key (in distributed.yaml, or as "
                "DASK_DISTRIBUTED__COMM__TLS__... environment variables).")
    return None


def resource_name(cluster: str) -> str:
    """The Dask resource a worker of this cluster advertises and every job of it needs:
    jobs go only to forgesyte workers whose folders carry this cluster's marker."""
    return f"forgesyte-{cluster}"


def _quiet_dask(level: int) -> None:
    """Dask logs every connection attempt at INFO; ours says what matters. Its statistical
    profiler samples every thread each 10 ms: a third of this process's CPU per tiny job,
    to profile tasks that only wait for a chain process. Off."""
    import dask
    import distributed  # noqa: F401 - importing it configures its loggers; override after

    dask.config.set({"distributed.worker.profile.enabled": False})

    dask_level = logging.DEBUG if level <= logging.DEBUG else logging.WARNING
    for name in ("distributed", "distributed.worker", "distributed.core", "distributed.nanny"):
        logging.getLogger(name).setLevel(dask_level)
    logging.getLogger("distributed.worker").addFilter(_SaidOnce())
