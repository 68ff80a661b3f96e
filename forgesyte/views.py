"""Text for people: aligned tables, ages and durations, progress bars, colour.

Colour only when the stream is a terminal and NO_COLOR is unset or empty
(https://no-color.org). Scripts use --json instead of parsing any of this.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from typing import Any, Iterable

import click

from forgesyte.storage.ids import parse_iso

COLOURS = {"pending": "cyan", "running": "yellow", "completed": "green", "failed": "red"}


def use_colour(stream) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")


def paint(text: str, status: str, colour: bool) -> str:
    return click.style(text, fg=COLOURS.get(status), bold=status == "failed") if colour else text


def _parse(iso: str | None) -> datetime | None:
    return parse_iso(iso) if iso else None


def span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def age(iso: str | None) -> str:
    moment = _parse(iso)
    return span((datetime.now(timezone.utc) - moment).total_seconds()) if moment else "-"


def duration(job: dict[str, Any]) -> str:
    start, end = _parse(job.get("started_at")), _parse(job.get("finished_at"))
    if start is None:
        return "-"
    return span(((end or datetime.now(timezone.utc)) - start).total_seconds())


def bar(percent: int, width: int = 20) -> str:
    filled = int(round(width * max(0, min(100, percent)) / 100))
    return "[" + "#" * filled + "." * (width - filled) + f"] {percent:3d}%"


def jobs_table(jobs: Iterable[dict[str, Any]], colour: bool, width: int | None = None) -> list[str]:
    """ID STATUS PROG AGE TIME INPUT, the input cut from the left to fit the terminal."""
    width = width or shutil.get_terminal_size((120, 20)).columns
    header = ("ID", "STATUS", "PROG", "AGE", "TIME", "INPUT")
    rows = [(j["id"], j["status"], f"{j['progress']}%", age(j["created_at"]), duration(j), j["input"])
            for j in jobs]
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


def job_detail(job: dict[str, Any], colour: bool) -> list[str]:
    labels = {"id": "id", "status": "status", "input": "input", "output": "results", "plugins": "plugins",
              "attempts": "attempts", "progress": "progress", "error": "error", "size": "size",
              "sha256": "sha256", "duplicate_of": "duplicate of", "created_at": "created",
              "started_at": "started", "finished_at": "finished"}
    width = max(len(v) for v in labels.values())
    lines = []
    for key, value in job.items():
        label = labels.get(key, key.replace("_", " "))
        if value is None or value == []:
            shown = "-"
        elif key == "status":
            shown = paint(value, value, colour)
        elif key == "plugins":
            shown = ", ".join(value)
        elif key == "size":
            shown = f"{value:,} bytes"
        elif key == "progress":
            shown = bar(value)
        elif key.endswith("_at"):
            shown = f"{value} ({age(value)} ago)"
        else:
            shown = str(value)
        lines.append(f"{label.ljust(width)}  {shown}")
    if job.get("started_at"):
        lines.append(f"{'took'.ljust(width)}  {duration(job)}")
    return lines


def watch_screen(counts: dict[str, int], running: list[dict[str, Any]], recent: list[dict[str, Any]],
                 daemon: dict[str, Any], colour: bool) -> list[str]:
    width = shutil.get_terminal_size((100, 30)).columns
    head = "daemon running (pid {pid})".format(**daemon) if daemon["running"] else "daemon NOT running"
    lines = [head + "   " + "  ".join(paint(f"{k} {v}", k, colour) for k, v in counts.items()), ""]
    if running:
        lines.append("RUNNING")
        for job in running:
            name = job["input"] if len(job["input"]) <= width - 45 else "…" + job["input"][-(width - 46):]
            lines.append(f"  {bar(job['progress'])}  {duration(job):>6}  {name}")
    else:
        lines.append("nothing running")
    if recent:
        lines += ["", "RECENT"] + ["  " + line for line in jobs_table(recent, colour, width - 2)[1:]]
    return lines
