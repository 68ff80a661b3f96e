"""Running one job's plugin chain, inside a worker process (local or on a cluster).

The worker hands `run_chain` a task (ids, relative keys, the chain and its
options), the plugins it has loaded, and its own inbox and output roots; the
keys are resolved here, against this machine's mount points. The results
document is written through the result store; the outcome goes back to
whoever scheduled the job. Messages sent while running:

    ("plugin", job_id, name)       a plugin starts
    ("progress", job_id, percent)  at most every PROGRESS_EVERY seconds
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable

from forgesyte.plugins.base import Context, PluginError
from forgesyte.storage.results import finished_record

PROGRESS_EVERY = 0.5  # seconds between progress messages


def run_chain(task: dict[str, Any], plugins: dict, inbox, results, send: Callable[[tuple], None]) -> dict[str, Any]:
    """Run every plugin of the chain in order; stop at the first failure."""
    job_id = task["job_id"]
    names: list[str] = task["plugins"]
    document: dict[str, Any] = {"job_id": job_id, "input": task["input"], "plugins": {}}
    error: str | None = None
    transient = False
    last_sent = [0.0]
    video = inbox.path_for(task["input"])

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
                section = info.plugin.run(video, ctx)
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
    status = "failed" if error else "completed"
    key = results.results_key(task["folder"])
    record = finished_record(task.get("record") or {"id": job_id, "input": task["input"]}, status, error, key)
    document["job"] = record
    results.write(task["folder"], document)
    return {"status": status, "output": key, "error": error, "transient": transient,
            "finished_at": record["finished_at"]}
