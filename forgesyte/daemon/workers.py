"""Worker processes: each runs one job's plugin chain at a time, isolated.

The daemon sends a task over a pipe; the worker runs the plugins, writes the
results document through the result store, and answers with the outcome.
The pool watches every worker: one that dies (segfault, abort, OOM kill)
fails only its job, with a sentence naming the plugin; one whose plugin runs
past the timeout is killed with its whole process group. Either way a fresh
worker takes its place. Workers start with `spawn`, so they inherit no
threads or locks from the daemon.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

log = logging.getLogger("forgesyte.workers")

PROGRESS_EVERY = 0.5  # seconds between progress messages from a worker


# -- inside the worker process -------------------------------------------------

def _run_chain(task: dict[str, Any], plugins: dict, results, send) -> dict[str, Any]:
    from forgesyte.plugins.base import Context, PluginError

    job_id = task["job_id"]
    names: list[str] = task["plugins"]
    document: dict[str, Any] = {"job_id": job_id, "input": task["input"], "plugins": {}}
    error: str | None = None
    transient = False
    last_sent = [0.0]

    for index, name in enumerate(names):
        send(("plugin", job_id, name))

        def progress(fraction: float, index=index) -> None:
            now = time.monotonic()
            if now - last_sent[0] >= PROGRESS_EVERY:
                last_sent[0] = now
                send(("progress", job_id, int(100 * (index + fraction) / len(names))))

        info = plugins.get(name)
        if info is None:
            error = f"Plugin '{name}' is not installed."
        elif info.error:
            error = f"Plugin '{name}' failed to load ({info.error})."
        else:
            ctx = Context(
                job_id=job_id,
                input_key=task["input"],
                options={**dict(getattr(info.plugin, "defaults", {}) or {}),
                         **task.get("options", {}).get(name, {})},
                progress=progress,
                artifact=lambda rel, name=name: results.artifact(task["folder"], name, rel),
                logger=logging.getLogger(f"forgesyte.plugin.{name}"),
            )
            try:
                section = info.plugin.run(Path(task["input_path"]), ctx)
                if not isinstance(section, dict):
                    raise TypeError(f"run() returned {type(section).__name__}, not a dict")
                if ctx.artifacts:
                    section.setdefault("artifacts", ctx.artifacts)
                json.dumps(section, allow_nan=False)
                document["plugins"][name] = section
            except PluginError as exc:
                error = f"Plugin '{name}' failed: {str(exc).rstrip('.')}."
                transient = exc.transient
            except MemoryError:
                error = f"Plugin '{name}' ran out of memory."
            except Exception as exc:
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no message"
                error = f"Plugin '{name}' crashed: {type(exc).__name__}: {detail.rstrip('.')}."
        if error:
            document["plugins"][name] = {"error": error}
            break
    key = results.write(task["folder"], document)
    return {"status": "failed" if error else "completed", "output": key, "error": error,
            "transient": transient}


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker if the daemon dies, even by kill -9 (no orphans)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def worker_main(conn: Connection, output_root: str, log_level: int, memory_mb: int | None = None) -> None:
    # Own process group: a timeout kill takes any children (ffmpeg, ...) with it.
    os.setsid()
    _die_with_parent()
    if memory_mb:
        # Address space, not RSS: a plugin that allocates past it gets MemoryError.
        import resource

        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s[%(process)d]: %(message)s")

    from forgesyte.plugins.registry import discover
    from forgesyte.storage.results import ResultStore

    plugins = discover()
    results = ResultStore(output_root)
    conn.send(("ready", None, os.getpid()))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            outcome = _run_chain(task, plugins, results, conn.send)
        except Exception as exc:  # e.g. the output folder became unwritable
            outcome = {"status": "failed", "output": None,
                       "error": f"The worker could not finish the job: {exc}."}
        conn.send(("done", task["job_id"], outcome))


# -- inside the daemon ---------------------------------------------------------

@dataclass
class WorkerHandle:
    process: Any
    conn: Connection
    task: dict[str, Any] | None = None
    plugin: str | None = None
    plugin_started: float = 0.0


@dataclass
class WorkerEvent:
    kind: str  # "progress" | "done"
    job_id: str
    value: Any = None


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
    output_root: str
    plugin_timeout: float
    log_level: int = logging.INFO
    memory_mb: int | None = None
    handles: list[WorkerHandle] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        for _ in range(self.size):
            self.handles.append(self._spawn())

    def _spawn(self) -> WorkerHandle:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(
            target=worker_main, args=(child, self.output_root, self.log_level, self.memory_mb),
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

    def _replace(self, handle: WorkerHandle) -> None:
        self._kill(handle)
        self.handles[self.handles.index(handle)] = self._spawn()

    @staticmethod
    def _kill(handle: WorkerHandle) -> None:
        try:
            os.killpg(handle.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        handle.process.join(timeout=5)
        handle.conn.close()

    def _crashed(self, handle: WorkerHandle, why: str) -> WorkerEvent | None:
        event = None
        if handle.task is not None:
            plugin = handle.plugin or "(before any plugin)"
            event = WorkerEvent("done", handle.task["job_id"], {
                "status": "failed", "output": None,
                "error": f"Plugin '{plugin}' {why}.",
            })
            log.error("worker %s: plugin %s %s", handle.process.pid, plugin, why)
        self._replace(handle)
        return event

    def poll(self, timeout: float) -> list[WorkerEvent]:
        """Wait up to `timeout` for worker messages; handle deaths and timeouts."""
        events: list[WorkerEvent] = []
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
                why = f"crashed the worker ({_describe_exit(handle.process.exitcode)})"
                event = self._crashed(handle, why)
                if event:
                    events.append(event)
            elif handle.task is not None:
                if time.monotonic() - handle.plugin_started > self.plugin_timeout:
                    event = self._crashed(
                        handle, f"did not finish within {self.plugin_timeout:g} s and was stopped"
                    )
                    if event:
                        events.append(event)
        return events

    def _message(self, handle: WorkerHandle, message: tuple) -> list[WorkerEvent]:
        kind, job_id, value = message
        if kind == "plugin":
            handle.plugin, handle.plugin_started = value, time.monotonic()
            return []
        if kind == "progress":
            return [WorkerEvent("progress", job_id, value)]
        if kind == "done":
            handle.task, handle.plugin = None, None
            return [WorkerEvent("done", job_id, value)]
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
