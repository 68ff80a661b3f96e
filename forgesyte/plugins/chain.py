"""Running one job's plugin chain, inside a worker process (local or on a cluster).

The worker hands `run_chain` a task (ids, relative keys, the chain and its
options), its plugins (a `registry.Loader`, which imports a plugin the first
time a job needs it, or any mapping name -> PluginInfo), and its own inbox
and output roots; the keys are resolved here, against this machine's mount
points. The results document is written through the result store; the
outcome goes back to whoever scheduled the job.

The chain runs in order, except that every frame plugin of the chain runs in
one shared decoding pass (pipeline.py), at the place of the first of them.
It stops after the step in which a plugin failed; the sections of plugins
that finished are kept. Messages sent while running:

    ("plugin", job_id, name)       a plugin starts (and, in a shared pass, one
                                   that holds a frame for long, so a timeout
                                   names the plugin that hangs)
    ("progress", job_id, percent)  at most every PROGRESS_EVERY seconds, weighted
                                   by each step's expected cost

A full or read-only disk (ENOSPC, EDQUOT, EROFS) is not the plugin's fault:
the OSError propagates out of run_chain, after this attempt's artifacts are
removed, so the daemon can pause and retry the job later.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import threading
import time
from typing import Any, Callable

from forgesyte.plugins.base import Context, PluginError, is_frame_plugin
from forgesyte.plugins.options import defaults_of
from forgesyte.plugins.pipeline import Consumer, run_pass
from forgesyte.storage.layout import newest_file
from forgesyte.storage.paths import redact
from forgesyte.storage.results import finished_record

PROGRESS_EVERY = 0.5  # seconds between progress messages
DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
PASS_DECODE_COST = 1.0  # a shared pass costs one decode plus its plugins' own cost


def is_disk_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_ERRORS


def failure_text(name: str, exc: BaseException) -> tuple[str, bool]:
    """(the sentence the job fails with, transient) for an exception out of a plugin."""
    if isinstance(exc, PluginError):
        return f"Plugin '{name}' failed: {str(exc).rstrip('.')}.", exc.transient
    if isinstance(exc, MemoryError):
        return f"Plugin '{name}' ran out of memory.", False
    if isinstance(exc, SystemExit):
        return f"Plugin '{name}' crashed: it called sys.exit({exc.code!r}).", False
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no message"
    return f"Plugin '{name}' crashed: {type(exc).__name__}: {detail.rstrip('.')}.", False


def _checked(section: Any, ctx: Context) -> dict[str, Any]:
    if not isinstance(section, dict):
        raise TypeError(f"it returned {type(section).__name__}, not a dict")
    if ctx.artifacts:
        section.setdefault("artifacts", ctx.artifacts)
    json.dumps(section, allow_nan=False)
    return section


def _frames(info: Any) -> bool:
    return info is not None and not info.error and is_frame_plugin(info.plugin)


def _steps(names: list[str], infos: dict[str, Any]) -> list[tuple[bool, list[str]]]:
    """The chain as steps (shared, names): each file plugin alone, every frame plugin
    in one shared pass at the place of the first of them."""
    steps: list[tuple[bool, list[str]]] = []
    shared: list[str] | None = None
    for name in names:
        if _frames(infos.get(name)):
            if shared is None:
                shared = []
                steps.append((True, shared))
            shared.append(name)
        else:
            steps.append((False, [name]))
    return steps


def _cost(info: Any) -> float:
    try:
        return max(0.0, float(getattr(info.plugin, "cost", 1.0)))
    except (TypeError, ValueError, AttributeError):
        return 1.0


def run_chain(task: dict[str, Any], plugins: Any, inbox, results, send: Callable[[tuple], None]) -> dict[str, Any]:
    """Run the job's chain; returns the outcome (status, output key, error, transient, finished_at)."""
    job_id = task["job_id"]
    names: list[str] = list(task["plugins"])
    lock = threading.Lock()

    def say(message: tuple) -> None:
        with lock:
            send(message)

    infos: dict[str, Any] = {}
    for name in names:  # announced first: an import that kills the worker is blamed on its plugin
        say(("plugin", job_id, name))
        infos[name] = plugins.get(name)
    try:
        return _run(task, names, infos, inbox, results, say)
    except OSError as exc:
        if is_disk_error(exc):
            if exc.filename is None:  # write() names no file: the one being written is the newest
                exc.filename = newest_file(results.root, task["folder"])
            for name in names:
                _remove_artifacts(results, task["folder"], name)
        raise


def _remove_artifacts(results, folder: str, plugin: str) -> None:
    try:
        shutil.rmtree(results.root.path_for(f"{folder}/{plugin}"), ignore_errors=True)
    except Exception:  # an unsafe name never had a folder
        pass


def _run(task: dict[str, Any], names: list[str], infos: dict[str, Any], inbox, results,
         say: Callable[[tuple], None]) -> dict[str, Any]:
    job_id = task["job_id"]
    document: dict[str, Any] = {"job_id": job_id, "input": task["input"], "plugins": {}}
    video = inbox.path_for(task["input"])
    steps = _steps(names, infos)
    weights = [PASS_DECODE_COST + sum(_cost(infos[n]) for n in step) if shared
               else _cost(infos[step[0]]) if infos.get(step[0]) is not None and not infos[step[0]].error else 0.0
               for shared, step in steps]
    total = sum(weights) or 1.0
    done_weight = 0.0
    last_sent = [0.0]
    errors: list[tuple[str, str, bool]] = []  # (plugin, sentence, transient) in chain order

    def reporter(weight: float) -> Callable[[float], None]:
        def progress(fraction: float) -> None:
            now = time.monotonic()
            if now - last_sent[0] >= PROGRESS_EVERY:
                last_sent[0] = now
                say(("progress", job_id, int(100 * (done_weight + weight * fraction) / total)))
        return progress

    def context(name: str, progress: Callable[[float], None]) -> Context:
        info = infos[name]
        return Context(
            job_id=job_id, input_key=task["input"],
            options={**defaults_of(info.plugin), **task.get("options", {}).get(name, {})},
            progress=progress,
            artifact=lambda rel, name=name: results.artifact(task["folder"], name, rel),
            logger=logging.getLogger(f"forgesyte.plugin.{name}"),
        )

    for (shared, step), weight in zip(steps, weights):
        progress = reporter(weight)
        if not shared:
            name = step[0]
            say(("plugin", job_id, name))
            info = infos.get(name)
            if info is None:
                errors.append((name, f"Plugin '{name}' is not installed.", False))
            elif info.error:
                errors.append((name, f"Plugin '{name}' failed to load ({info.error.rstrip('.')}).", False))
            else:
                ctx = context(name, progress)
                try:
                    document["plugins"][name] = _checked(info.plugin.run(video, ctx), ctx)
                except Exception as exc:
                    if is_disk_error(exc):
                        raise
                    errors.append((name, *failure_text(name, exc)))
        else:
            for name in step:  # they all start now (the last one named is the one shown as running)
                say(("plugin", job_id, name))
            consumers = [Consumer(name, infos[name].plugin, context(name, lambda f: None)) for name in step]
            run_pass(video, consumers, progress, lambda name: say(("plugin", job_id, name)))
            for c in consumers:
                if c.error is None:
                    try:
                        document["plugins"][c.name] = _checked(c.section, c.ctx)
                        continue
                    except Exception as exc:
                        c.error = exc
                if is_disk_error(c.error):
                    raise c.error
                errors.append((c.name, *failure_text(c.name, c.error)))
        errors[:] = [(n, redact(t, inbox, results.root), tr) for n, t, tr in errors]  # keys, not paths
        for name, sentence, _ in errors:
            document["plugins"][name] = {"error": sentence}
        if errors:
            break
        done_weight += weight
    order = {name: i for i, name in enumerate(names)}
    errors.sort(key=lambda e: order[e[0]])
    error = errors[0][1] if errors else None
    transient = errors[0][2] if errors else False
    document["plugins"] = {n: document["plugins"][n] for n in names if n in document["plugins"]}
    status = "failed" if error else "completed"
    key = results.results_key(task["folder"])
    record = finished_record(task.get("record") or {"id": job_id, "input": task["input"]}, status, error, key)
    document["job"] = record
    results.write(task["folder"], document)
    return {"status": status, "output": key, "error": error, "transient": transient,
            "finished_at": record["finished_at"]}
