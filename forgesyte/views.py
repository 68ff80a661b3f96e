"""Text for people: aligned tables, ages and durations, sizes, progress bars, colour.

Colour only when the stream is a terminal and NO_COLOR is unset or empty
(https://no-color.org). Scripts use --json instead of parsing any of this.
Every name that came from outside (input keys, errors, plugin names) goes
through forgesyte.text.display() here, so a file name cannot drive the
terminal of whoever reads a table.

A job whose record says `running` while no daemon holds the state was left
by a daemon that is gone: it is shown as "interrupted", and its clock does
not tick (the next daemon puts it back to pending).
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from typing import Any, Iterable

import click

from forgesyte.storage.ids import parse_iso
from forgesyte.text import display

COLOURS = {"pending": "cyan", "running": "yellow", "completed": "green", "failed": "red",
           "interrupted": "magenta"}


def use_colour(stream) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")


def paint(text: str, status: str, colour: bool) -> str:
    return click.style(text, fg=COLOURS.get(status), bold=status == "failed") if colour else text


def _parse(iso: str | None) -> datetime | None:
    try:
        return parse_iso(iso) if iso else None
    except ValueError:
        return None


def span(seconds: float) -> str:
    """A duration as people read it: 4.2s, 12s, 3m 05s, 2h 07m, 3d 04h."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    for big, big_name, small, small_name in ((86400, "d", 3600, "h"), (3600, "h", 60, "m"), (60, "m", 1, "s")):
        if whole >= big:
            return f"{whole // big}{big_name} {(whole % big) // small:02d}{small_name}"
    return f"{whole}s"  # pragma: no cover - unreachable


def size(n: int | None) -> str:
    """Bytes as people read them (binary units, as ls -h and du -h count)."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - unreachable


def age(iso: str | None) -> str:
    moment = _parse(iso)
    return span((datetime.now(timezone.utc) - moment).total_seconds()) if moment else "-"


def shown_status(job: dict[str, Any]) -> str:
    return "interrupted" if job.get("interrupted") else job["status"]


def duration(job: dict[str, Any]) -> str:
    """Run time: finished - started, or the time so far while it really runs."""
    start, end = _parse(job.get("started_at")), _parse(job.get("finished_at"))
    if start is None or (end is None and job.get("interrupted")):
        return "-"
    return span(((end or datetime.now(timezone.utc)) - start).total_seconds())


def bar(percent: int, width: int = 20) -> str:
    filled = int(round(width * max(0, min(100, percent)) / 100))
    return "[" + "#" * filled + "." * (width - filled) + f"] {percent:3d}%"


def _progress(job: dict[str, Any]) -> str:
    plugin = job.get("plugin") if job["status"] == "running" and not job.get("interrupted") else None
    return f"{job['progress']}% {display(plugin)}" if plugin else f"{job['progress']}%"


def jobs_table(jobs: Iterable[dict[str, Any]], colour: bool, width: int | None = None) -> list[str]:
    """ID STATUS PROG AGE TIME INPUT, the input cut from the left to fit the terminal.
    PROG names the plugin that is running."""
    width = width or shutil.get_terminal_size((120, 20)).columns
    header = ("ID", "STATUS", "PROG", "AGE", "TIME", "INPUT")
    rows = [(display(j["id"]), shown_status(j), _progress(j), age(j["created_at"]), duration(j),
             display(j["input"])) for j in jobs]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(5)]
    lines = []
    for row in [header] + rows:
        cells = [row[i].ljust(widths[i]) for i in range(5)]
        if row is not header:
            cells[1] = paint(cells[1], row[1], colour)
        prefix = "  ".join(cells) + "  "
        room = max(8, width - (sum(widths) + 2 * 5))
        name = row[5] if len(row[5]) <= room else "…" + row[5][-(room - 1):]
        lines.append(prefix + name)
    return lines


_LABELS = {"id": "id", "status": "status", "input": "input", "output": "results", "plugins": "plugins",
           "attempts": "attempts", "progress": "progress", "error": "error", "size": "size",
           "sha256": "sha256", "duplicate_of": "duplicate of", "created_at": "created",
           "started_at": "started", "finished_at": "finished", "plugin": "running plugin",
           "retry_at": "retry at"}


def job_detail(job: dict[str, Any], colour: bool) -> list[str]:
    """Every field of a record, one per line, plus how long it ran (or has been running)."""
    width = max(len(v) for v in _LABELS.values())
    lines = []
    for key, value in job.items():
        if key == "interrupted":
            continue
        label = _LABELS.get(key, key.replace("_", " "))
        if key == "plugin" and (job["status"] != "running" or value is None):
            continue
        if value is None or value == []:
            shown = "-"
        elif key == "status":
            status = shown_status(job)
            shown = paint(status, status, colour)
            if status == "interrupted":
                shown += " (its daemon stopped while it ran; the next daemon puts it back to pending)"
        elif key == "plugins":
            shown = ", ".join(display(p) for p in value)
        elif key == "size" and isinstance(value, int):
            shown = f"{size(value)} ({value:,} bytes)"
        elif key == "progress":
            shown = bar(value)
        elif key.endswith("_at"):
            shown = f"{value} ({age(value)} ago)" if _parse(value) else display(value)
        else:
            shown = display(value)
        lines.append(f"{label.ljust(width)}  {shown}")
    if job.get("started_at"):
        if job.get("finished_at"):
            lines.append(f"{'took'.ljust(width)}  {duration(job)}")
        elif job["status"] == "running" and not job.get("interrupted"):
            lines.append(f"{'running for'.ljust(width)}  {duration(job)}")
    return lines


def watch_screen(counts: dict[str, int], running: list[dict[str, Any]], recent: list[dict[str, Any]],
                 daemon: dict[str, Any], colour: bool) -> list[str]:
    width = shutil.get_terminal_size((100, 30)).columns
    head = "daemon running (pid {pid})".format(**daemon) if daemon["running"] else "daemon NOT running"
    lines = [head + "   " + "  ".join(paint(f"{k} {v}", k, colour) for k, v in counts.items()), ""]
    if running:
        lines.append("RUNNING" if daemon["running"] else "INTERRUPTED (no daemon; they go back to pending at start)")
        for job in running:
            plugin = display(job.get("plugin") or "") if daemon["running"] else ""
            room = max(8, width - 46 - len(plugin))
            name = display(job["input"])
            name = name if len(name) <= room else "…" + name[-(room - 1):]
            lines.append(f"  {bar(job['progress'])}  {duration(job):>7}  {plugin + '  ' if plugin else ''}{name}")
    else:
        lines.append("nothing running")
    if recent:
        lines += ["", "RECENT"] + ["  " + line for line in jobs_table(recent, colour, width - 2)[1:]]
    return lines


def event_line(event: dict[str, Any], colour: bool) -> str:
    """One transition for `events`: local time, status, id, input (and the error)."""
    moment = _parse(event.get("time"))
    when = moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else display(event.get("time"))
    status = str(event.get("status"))
    error = f": {display(event['error'])}" if event.get("error") else ""
    return (f"{when}  {paint(status.ljust(9), status, colour)}  {display(event.get('job_id'))}  "
            f"{display(event.get('input'))}{error}")


def finished_line(job: dict[str, Any], colour: bool) -> str:
    """One finished job for `wait`: status, id, input (and the error)."""
    error = f": {display(job['error'])}" if job.get("error") else ""
    return (f"{paint(job['status'].ljust(9), job['status'], colour)}  {display(job['id'])}  "
            f"{display(job['input'])}{error}")
