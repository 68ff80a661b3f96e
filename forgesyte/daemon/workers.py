"""Worker processes: each runs one job's plugin chain at a time, isolated.

The daemon sends a task over a pipe; the worker runs the plugins, writes the
results document through the result store, and answers with the outcome.
The pool watches every worker: one that dies (segfault, abort, OOM kill)
fails only its job, with a sentence naming the plugin; one whose plugin runs
past the timeout is killed with everything it started. Either way a fresh
worker takes its place. Each slot is a small host process (spawned, so it
inherits no threads or locks from the daemon) that forks the worker and
kills whatever the worker leaves behind: see reaper.py.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from forgesyte.daemon import reaper
from forgesyte.daemon.executor import Done, Event, Progress

log = logging.getLogger("forgesyte.workers")

# -- inside the host and worker processes ------------------------------------------

def _host_main(conn: Connection, inbox_root: str, output_root: str, log_level: int,
               memory_mb: int | None = None) -> None:
    """The host: a subreaper that forks the worker and cleans up after it (see reaper.py)."""
    reaper.become_subreaper()
    reaper.signal_on_parent_death(signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the daemon's to handle

    stopping: list[bool] = []

    def on_term(signum, _frame):
        # The cleanup happens here, not in the code the signal interrupts: the pool sends
        # SIGTERM right after it SIGKILLs the worker, so it often lands while the main
        # thread is already in kill_descendants below, and an exception raised there would
        # leave what escaped the worker's group (a setsid grandchild) to init. Once:
        # PDEATHSIG comes again each time the kernel re-parents us while the daemon's
        # threads die one by one.
        if stopping:
            return
        stopping.append(True)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        reaper.kill_descendants()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    if os.getppid() == 1:  # the daemon died before we got here
        return
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            worker_main(conn, inbox_root, output_root, log_level, memory_mb)
            code = 0
        except BaseException:
            pass
        finally:
            os._exit(code)
    conn.close()
    status = 0
    while True:
        try:
            done, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if done == pid:
            break
    reaper.kill_descendants()
    if os.WIFSIGNALED(status):
        # Die the way the worker died, so the pool can say "killed by SIGSEGV".
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def worker_main(conn: Connection, inbox_root: str, output_root: str, log_level: int,
                memory_mb: int | None = None) -> None:
    # Own process group: a timeout kill takes the worker and its plain children at once.
    os.setsid()
    reaper.signal_on_parent_death(signal.SIGKILL)
    reaper.become_subreaper()
    if memory_mb:
        # Address space, not RSS: a plugin that allocates past it gets MemoryError.
        import resource

        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.umask(0o027)  # artifacts plugins write are 0640 (folders 0750), whatever the umask
    from forgesyte.text import SafeFormatter  # a name's control characters never reach the log raw

    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter("%(levelname)s %(name)s[%(process)d]: %(message)s"))
    logging.basicConfig(level=log_level, handlers=[handler])

    from forgesyte.plugins.chain import run_chain
    from forgesyte.plugins.registry import Loader
    from forgesyte.storage.paths import Root
    from forgesyte.storage.results import ResultStore

    plugins = Loader()  # imports a plugin when a job first needs it, never all of them
    inbox = Root(inbox_root)
    results = ResultStore(output_root)
    conn.send(("ready", None, os.getpid()))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        running: list[str | None] = [None]  # the plugin last announced: a disk error names it

        def send(message: tuple, running=running) -> None:
            if message[0] == "plugin":
                running[0] = message[2]
            conn.send(message)

        store = results
        if task.get("fence"):  # a cluster job: it writes only into its attempt's staging folder
            from forgesyte.daemon.clusterstage import staged_results

            store = staged_results(output_root, task["job_id"], task.get("run", 0))
        try:
            outcome = run_chain(task, plugins, inbox, store, send)
        except Exception as exc:  # e.g. the output folder became unwritable
            from forgesyte.daemon.diskspace import is_disk_error, worker_outcome
            from forgesyte.storage.paths import redact

            if is_disk_error(exc):  # full or read-only: the job waits, it does not fail
                outcome = worker_outcome(exc, task, store, running[0])  # cleans up what it wrote
            else:
                outcome = {"status": "failed", "output": None, "error": "The worker could not finish "
                           f"the job: {redact(exc, inbox, store.root, results.root)}."}
        finally:
            reaper.kill_descendants()  # whatever the plugins started dies with the job
        conn.send(("done", task["job_id"], outcome))


# -- inside the daemon ---------------------------------------------------------

@dataclass
class WorkerHandle:
    process: Any  # the host
    conn: Connection
    worker_pid: int | None = None
    task: dict[str, Any] | None = None
    plugin: str | None = None
    plugin_started: float = 0.0


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "it stopped answering"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass
class WorkerPool:
    size: int
    inbox_root: str
    output_root: str
    plugin_timeout: float
    log_level: int = logging.INFO
    memory_mb: int | None = None
    handles: list[WorkerHandle] = field(default_factory=list)
    _queued: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        for _ in range(self.size):
            self.handles.append(self._spawn())

    def _spawn(self) -> WorkerHandle:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(
            target=_host_main,
            args=(child, self.inbox_root, self.output_root, self.log_level, self.memory_mb),
            name="forgesyte-worker", daemon=True,
        )
        process.start()
        child.close()
        return WorkerHandle(process, parent)

    @property
    def idle(self) -> int:
        return sum(1 for h in self.handles if h.task is None)

    @property
    def busy_jobs(self) -> list[str]:
        return [h.task["job_id"] for h in self.handles if h.task is not None]

    def healthy(self) -> bool:
        return all(h.process.is_alive() for h in self.handles)

    def submit(self, task: dict[str, Any]) -> None:
        for handle in self.handles:
            if handle.task is None:
                handle.task, handle.plugin = task, None
                handle.plugin_started = time.monotonic()
                handle.conn.send(task)
                return
        raise RuntimeError("no idle worker")

    def cancel(self, job_id: str) -> bool:
        """Kill the worker running `job_id` (and everything it started); its Done
        (failed, "Cancelled.") comes out of the next poll()."""
        for handle in self.handles:
            if handle.task is not None and handle.task["job_id"] == job_id:
                self._queued.append(self._stopped(handle, None, "Cancelled."))
                return True
        return False

    def _replace(self, handle: WorkerHandle) -> None:
        self._kill(handle)
        self.handles[self.handles.index(handle)] = self._spawn()

    @staticmethod
    def _kill(handle: WorkerHandle) -> None:
        """The worker's group at once; the host then kills whatever escaped the group."""
        if handle.worker_pid:
            try:
                os.killpg(handle.worker_pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if handle.process.is_alive():
            try:
                os.kill(handle.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        handle.process.join(timeout=5)
        if handle.process.is_alive():
            handle.process.kill()
            handle.process.join(timeout=5)
        handle.conn.close()

    def _stopped(self, handle: WorkerHandle, why: str | None, error: str | None = None) -> Done | None:
        """The handle's worker is gone or must go: its job (if any) fails; a fresh one starts."""
        event = None
        if handle.task is not None:
            plugin = handle.plugin or "(before any plugin)"
            event = Done(handle.task["job_id"], handle.task.get("run", 0), {
                "status": "failed", "output": None, "error": error or f"Plugin '{plugin}' {why}.",
                "cancelled": error is not None,
            })
            if why:
                log.error("worker %s: plugin %s %s", handle.process.pid, plugin, why)
        self._replace(handle)
        return event

    def poll(self, timeout: float) -> list[Event]:
        """Wait up to `timeout` for worker messages; handle deaths and timeouts."""
        events, self._queued = self._queued, []
        waitables = {h.conn: h for h in self.handles}
        waitables.update({h.process.sentinel: h for h in self.handles})
        ready = wait(list(waitables), timeout=max(0.0, timeout))
        dead: set[int] = set()
        for obj in ready:
            handle = waitables[obj]
            if obj is handle.conn:
                try:
                    while handle.conn.poll():
                        events.extend(self._message(handle, handle.conn.recv()))
                except (EOFError, OSError):
                    dead.add(id(handle))
            else:
                dead.add(id(handle))
        for handle in list(self.handles):
            if id(handle) in dead or not handle.process.is_alive():
                handle.process.join(timeout=1)
                event = self._stopped(handle, f"crashed the worker ({_describe_exit(handle.process.exitcode)})")
                if event:
                    events.append(event)
            elif handle.task is not None:
                if time.monotonic() - handle.plugin_started > self.plugin_timeout:
                    event = self._stopped(
                        handle, f"did not finish within {self.plugin_timeout:g} s and was stopped"
                    )
                    if event:
                        events.append(event)
        return events

    def _message(self, handle: WorkerHandle, message: tuple) -> list[Event]:
        kind, job_id, value = message
        if kind == "ready":
            handle.worker_pid = value
            return []
        if handle.task is None or job_id != handle.task["job_id"]:
            return []
        run = handle.task.get("run", 0)
        if kind == "plugin":
            handle.plugin, handle.plugin_started = value, time.monotonic()
            return [Progress(job_id, run, -1, value)]
        if kind == "progress":
            return [Progress(job_id, run, value, handle.plugin)]
        if kind == "done":
            handle.task, handle.plugin = None, None
            return [Done(job_id, run, value)]
        return []

    def shutdown(self, grace: float = 0.0) -> list[str]:
        """Stop every worker; returns the ids of jobs that were still running."""
        interrupted = self.busy_jobs
        for handle in self.handles:
            if handle.task is None:
                try:
                    handle.conn.send(None)
                except OSError:
                    pass
        deadline = time.monotonic() + grace
        for handle in self.handles:
            if handle.task is None:
                handle.process.join(timeout=max(0.1, deadline - time.monotonic()))
            self._kill(handle)
        self.handles.clear()
        return interrupted
