"""Read-only commands about jobs: status, list, show, results, watch.

None of them writes or creates anything: a mistyped --home shows an empty
state (or an unknown job), it does not leave folders behind.
"""

from __future__ import annotations

import shutil
import sys
from typing import Any

import click

from forgesyte.cli import (
    UserError, _complete_jobs, _emit_json, _ready_dirs, _resolve, _settings, _store, cli,
)


def mark_interrupted(records: list[dict[str, Any]], daemon_running: bool) -> list[dict[str, Any]]:
    """A `running` record with no daemon holding the state was left by one that is gone.
    JSON keeps status "running" (the store's truth) and says `"interrupted": true`."""
    for record in records:
        if record["status"] == "running":
            record["interrupted"] = not daemon_running
    return records


def _daemon(settings) -> dict[str, Any]:
    from forgesyte.daemon.lock import daemon_info

    return daemon_info(settings.state)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Job counts by status, and whether a daemon holds this state."""
    settings = _settings(ctx)
    _ready_dirs(settings, create=False)
    store = _store(settings)
    counts = store.counts()
    info = _daemon(settings)
    interrupted = 0 if info["running"] else counts.get("running", 0)
    document = {
        "counts": counts,
        "total": sum(counts.values()),
        "interrupted": interrupted,
        "daemon": {"running": info["running"], "pid": info["pid"], "since": info["since"]},
        "inbox": str(settings.inbox),
        "output": str(settings.output),
    }
    if as_json:
        _emit_json(document)
        return
    from forgesyte.views import age, paint, use_colour

    colour = use_colour(sys.stdout)
    daemon = (f"running (pid {info['pid']}, up {age(info['since'])}, since {info['since']})"
              if info["running"] else paint("not running", "failed", colour))
    shown = []
    for name, count in counts.items():
        if name == "running" and interrupted:
            shown.append(paint(f"interrupted {count}", "interrupted", colour))
        else:
            shown.append(paint(f"{name} {count}", name, colour))
    click.echo(f"daemon:    {daemon}")
    click.echo("jobs:      " + "  ".join(shown) + f"  total {document['total']}")
    if interrupted:
        click.echo(f"           {interrupted} job{'s were' if interrupted > 1 else ' was'} running when the "
                   "daemon stopped; the next daemon puts them back to pending.")
    click.echo(f"inbox:     {settings.inbox}")
    click.echo(f"output:    {settings.output}")


@cli.command(name="list")
@click.option("--status", "status_", type=click.Choice(["pending", "running", "completed", "failed"]),
              help="Only jobs in this status.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON document (a list) on stdout.")
@click.pass_context
def list_(ctx: click.Context, status_: str | None, limit: int, as_json: bool) -> None:
    """Jobs, newest first (says on stderr when --limit cut the list)."""
    from forgesyte.storage.jobs import public_record

    settings = _settings(ctx)
    _ready_dirs(settings, create=False)
    store = _store(settings)
    found = store.newest(limit + 1, status_)
    jobs = mark_interrupted([public_record(j) for j in found[:limit]], _daemon(settings)["running"])
    if len(found) > limit:
        counts = store.counts()
        total = counts.get(status_, 0) if status_ else sum(counts.values())
        what = f"{status_} jobs" if status_ else "jobs"
        click.echo(f"Showing the newest {limit} of {total:,} {what}; use --limit to see more.", err=True)
    if as_json:
        _emit_json(jobs)
        return
    if not jobs:
        click.echo("No jobs.")
        return
    from forgesyte.views import jobs_table, use_colour

    width = shutil.get_terminal_size((120, 20)).columns if sys.stdout.isatty() else 10_000
    for line in jobs_table(jobs, use_colour(sys.stdout), width):
        click.echo(line)


@cli.command()
@click.argument("job", shell_complete=_complete_jobs)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_context
def show(ctx: click.Context, job: str, as_json: bool) -> None:
    """One job record. JOB: id, unique id prefix, input key, or the input's path."""
    from forgesyte.storage.jobs import public_record

    settings = _settings(ctx)
    _ready_dirs(settings, create=False)
    record = public_record(_resolve(_store(settings), job, settings))
    mark_interrupted([record], _daemon(settings)["running"])
    if as_json:
        _emit_json(record)
        return
    from forgesyte.views import job_detail, use_colour

    for line in job_detail(record, use_colour(sys.stdout)):
        click.echo(line)


@cli.command()
@click.argument("job", shell_complete=_complete_jobs)
@click.option("--plugin", help="Print only this plugin's section.")
@click.pass_context
def results(ctx: click.Context, job: str, plugin: str | None) -> None:
    """Print a completed job's results document (JSON)."""
    from forgesyte.storage.paths import UnsafeKey
    from forgesyte.storage.results import ResultsMissing, ResultStore
    from forgesyte.text import display

    settings = _settings(ctx)
    _ready_dirs(settings, create=False)
    record = _resolve(_store(settings), job, settings)
    if record["status"] != "completed":
        detail = f": {display(record['error'])}" if record.get("error") else ""
        raise UserError(f"Job {record['id']} is {record['status']}, not completed{detail}")
    try:
        document = ResultStore(settings.output).read(record["output"])
    except (ResultsMissing, UnsafeKey) as exc:
        raise UserError(display(str(exc))) from None
    if plugin is not None:
        if plugin not in document.get("plugins", {}):
            raise UserError(f"Job {record['id']} has no results from plugin {display(repr(plugin))}.")
        document = document["plugins"][plugin]
    _emit_json(document)


@cli.command()
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True)
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many refreshes.")
@click.pass_context
def watch(ctx: click.Context, interval: float, count: int | None) -> None:
    """A live view of running jobs with progress bars and plugins (Ctrl-C to leave)."""
    import time

    from forgesyte.storage.jobs import public_record
    from forgesyte.views import use_colour, watch_screen

    settings = _settings(ctx)
    _ready_dirs(settings, create=False)
    tty = sys.stdout.isatty()
    shown = 0
    try:
        while count is None or shown < count:
            store = _store(settings)  # a fresh snapshot each refresh
            info = _daemon(settings)
            running = mark_interrupted([public_record(j) for j in store.with_status("running")], info["running"])
            recent = mark_interrupted([public_record(j) for j in store.newest(5)], info["running"])
            lines = watch_screen(store.counts(), running, recent, info, use_colour(sys.stdout))
            if tty:
                click.echo("\x1b[H\x1b[2J", nl=False)
            click.echo("\n".join(lines))
            shown += 1
            if count is None or shown < count:
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
