"""Read-only commands about jobs: status, list, show, results, watch."""

from __future__ import annotations

import shutil
import sys

import click

from forgesyte.cli import UserError, _emit_json, _ready_dirs, _resolve, _settings, _store, cli


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Job counts by status, and whether a daemon holds this state."""
    from forgesyte.daemon.lock import daemon_info

    settings = _settings(ctx)
    _ready_dirs(settings, create=False)
    store = _store(settings)
    counts = store.counts()
    info = daemon_info(settings.state)
    document = {
        "counts": counts,
        "total": sum(counts.values()),
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
    click.echo(f"daemon:    {daemon}")
    click.echo("jobs:      " + "  ".join(paint(f"{k} {v}", k, colour) for k, v in counts.items())
               + f"  total {document['total']}")
    click.echo(f"inbox:     {settings.inbox}")
    click.echo(f"output:    {settings.output}")


@cli.command(name="list")
@click.option("--status", "status_", type=click.Choice(["pending", "running", "completed", "failed"]),
              help="Only jobs in this status.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON document (a list) on stdout.")
@click.pass_context
def list_(ctx: click.Context, status_: str | None, limit: int, as_json: bool) -> None:
    """Jobs, newest first."""
    from forgesyte.storage.jobs import public_record

    settings = _settings(ctx)
    _ready_dirs(settings, create=False)
    jobs = [public_record(j) for j in _store(settings).newest(limit, status_)]
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
@click.argument("job")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_context
def show(ctx: click.Context, job: str, as_json: bool) -> None:
    """One job record. JOB: id, unique id prefix, or input path."""
    from forgesyte.storage.jobs import public_record

    settings = _settings(ctx)
    _ready_dirs(settings, create=False)
    record = public_record(_resolve(_store(settings), job))
    if as_json:
        _emit_json(record)
        return
    from forgesyte.views import job_detail, use_colour

    for line in job_detail(record, use_colour(sys.stdout)):
        click.echo(line)


@cli.command()
@click.argument("job")
@click.option("--plugin", help="Print only this plugin's section.")
@click.pass_context
def results(ctx: click.Context, job: str, plugin: str | None) -> None:
    """Print a completed job's results document (JSON)."""
    from forgesyte.storage.paths import UnsafeKey
    from forgesyte.storage.results import ResultsMissing, ResultStore

    settings = _settings(ctx)
    _ready_dirs(settings, create=False)
    record = _resolve(_store(settings), job)
    if record["status"] != "completed":
        detail = f": {record['error']}" if record.get("error") else ""
        raise UserError(f"Job {record['id']} is {record['status']}, not completed{detail}")
    try:
        document = ResultStore(settings.output).read(record["output"])
    except (ResultsMissing, UnsafeKey) as exc:
        raise UserError(str(exc)) from None
    if plugin is not None:
        if plugin not in document.get("plugins", {}):
            raise UserError(f"Job {record['id']} has no results from plugin '{plugin}'.")
        document = document["plugins"][plugin]
    _emit_json(document)



@cli.command()
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True)
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many refreshes.")
@click.pass_context
def watch(ctx: click.Context, interval: float, count: int | None) -> None:
    """A live view of running jobs with progress bars (Ctrl-C to leave)."""
    import time

    from forgesyte.daemon.lock import daemon_info
    from forgesyte.views import use_colour, watch_screen

    settings = _settings(ctx)
    _ready_dirs(settings, create=False)
    tty = sys.stdout.isatty()
    shown = 0
    try:
        while count is None or shown < count:
            store = _store(settings)  # a fresh snapshot each refresh
            lines = watch_screen(store.counts(), store.with_status("running"), store.newest(5),
                                 daemon_info(settings.state), use_colour(sys.stdout))
            if tty:
                click.echo("\x1b[H\x1b[2J", nl=False)
            click.echo("\n".join(lines))
            shown += 1
            if count is None or shown < count:
                time.sleep(interval)
    except KeyboardInterrupt:
        pass


