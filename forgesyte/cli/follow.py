"""Commands that follow the state as it changes: wait, events.

Both only read: each turn opens a fresh snapshot of the store (or reads the
event log from a cursor), so they never get in the daemon's way and work the
same with or without one running.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import click

from forgesyte.cli import UserError, _emit_json, _ready_dirs, _settings, _store, cli, lossless
from forgesyte.cli.complete import complete_jobs_and_paths
from forgesyte.config import ConfigError, Settings
from forgesyte.text import display

EXIT_TIMEOUT = 124  # as timeout(1)
POLL = 0.2
# why() verdicts after which a path will never become a job by itself.
NEVER = ("missing", "invalid", "ignored", "not-video", "outside", "not-file", "pruned")


@dataclass
class Waited:
    """One JOB argument of `wait`: a job id to watch, or an inbox key whose job is still to come."""

    ref: str
    job_id: str | None = None
    key: str | None = None
    after: str | None = None  # the new job must be newer than this (a finished one for the same key)
    done: dict[str, Any] | None = None
    problem: str | None = None


def _classify(settings: Settings, store, ref: str) -> Waited:
    """What a JOB argument means now: a job, an input still to become one, or nothing.

    A job id (or prefix) means exactly that job. An input (key or path) means its
    newest job, unless the file has changed since that job finished (dropped
    again) or has no job yet: then the job still to come from it.
    """
    from forgesyte.cli import _resolve, path_key
    from forgesyte.daemon.why import explain
    from forgesyte.storage.jobs import PENDING

    item = Waited(ref)
    record = None
    try:
        record = _resolve(store, ref, settings)
    except UserError as exc:
        item.problem = exc.format_message()
    if record is not None and record["id"].startswith(ref):
        item.job_id = record["id"]
        return item
    key = record["input"] if record is not None else path_key(settings, ref)
    if key is None:
        item.problem = item.problem or f"No job matches {display(repr(ref))}."
        return item
    item.key = key
    answer = explain(settings, store, key)
    if answer["verdict"] == "job":
        item.problem, item.job_id = None, answer["job"]["id"]
    elif answer["verdict"] in NEVER:
        if record is not None and answer["verdict"] in ("missing", "pruned"):
            item.job_id = record["id"]  # its file went away since: that job is the one
        else:
            item.problem = answer["reason"]
    else:  # being written, settling, hashing, no daemon yet: its job is still to come
        item.problem = None
        if record is not None:
            if record["status"] == PENDING:
                item.job_id = record["id"]  # new content updates this same pending job
            else:
                item.after = record["id"]  # running or finished: new content makes a new job
    return item


def _advance(settings: Settings, store, item: Waited) -> None:
    from forgesyte.daemon.why import unchanged
    from forgesyte.storage.jobs import JobNotFound, public_record
    from forgesyte.storage.paths import name_from_key

    if item.job_id is None:
        latest = store.latest_for_input(item.key)
        if latest is None:
            return
        if item.after is not None and latest["id"] <= item.after and not unchanged(
                os.path.join(str(settings.inbox), name_from_key(item.key)), latest):
            return
        # A newer job, or the daemon recorded the file as that same content (a `touch`).
        item.job_id = latest["id"]
    try:
        job = public_record(store.get(item.job_id))
    except JobNotFound:
        item.problem = f"Job {item.job_id} was pruned while waiting for it."
        return
    if job["status"] in ("completed", "failed"):
        item.done = job


@cli.command()
@click.argument("jobs", nargs=-1, required=True, metavar="JOB...", shell_complete=complete_jobs_and_paths)
@click.option("--timeout", type=click.FloatRange(min=0), metavar="S",
              help="Give up after S seconds (exit 124).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document at the end, instead of lines.")
@click.pass_context
def wait(ctx: click.Context, jobs: tuple[str, ...], timeout: float | None, as_json: bool) -> int:
    """Block until every JOB is finished; one line per job as it finishes.

    A JOB may name a file in the inbox that is not a job yet (just dropped):
    its job is waited for too. Exit 0 all completed, 1 any failed or unknown,
    124 on timeout.
    """
    from forgesyte.daemon.lock import daemon_info
    from forgesyte.views import finished_line, use_colour

    settings = _settings(ctx)
    _ready_dirs(settings, create=False)
    colour = use_colour(sys.stdout)
    store = _store(settings)
    items = [_classify(settings, store, ref) for ref in jobs]
    unknown = [item for item in items if item.problem]
    for item in unknown:
        click.echo(item.problem, err=True)
    waiting = [item for item in items if not item.problem]
    if waiting and not daemon_info(settings.state)["running"] and sys.stderr.isatty():
        click.echo("No daemon holds this state; waiting for one to run the jobs.", err=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    finished: list[dict[str, Any]] = []
    while True:
        for item in waiting:
            _advance(settings, store, item)
            if item.problem:
                click.echo(item.problem, err=True)
                unknown.append(item)
            elif item.done is not None:
                finished.append(item.done)
                if not as_json:
                    click.echo(finished_line(item.done, colour))
        waiting = [item for item in waiting if item.done is None and not item.problem]
        if not waiting:
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
        time.sleep(POLL if deadline is None else max(0.0, min(POLL, deadline - time.monotonic())))
        store = _store(settings)
    if as_json:
        _emit_json({"jobs": finished, "unknown": [lossless(item.ref) for item in unknown],
                    "timed_out": [lossless(item.ref) for item in waiting]})
    if waiting:
        names = ", ".join(display(item.ref) for item in waiting)
        click.echo(f"Timed out after {timeout:g} s waiting for {names}.", err=True)
        return EXIT_TIMEOUT
    return 1 if unknown or any(job["status"] != "completed" for job in finished) else 0


@cli.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new transitions (Ctrl-C to stop).")
@click.option("--since", metavar="DURATION", help="Only transitions in the last DURATION, e.g. 10m, 2h, 1d.")
@click.option("--json", "as_json", is_flag=True,
              help='One JSON object per line: {"time", "job_id", "input", "status", "error"}.')
@click.pass_context
def events(ctx: click.Context, follow: bool, since: str | None, as_json: bool) -> None:
    """Job transitions, oldest first (like journalctl; --follow like journalctl -f)."""
    import json

    from forgesyte.config import parse_duration
    from forgesyte.storage.events import EventLogError, read_events
    from forgesyte.storage.ids import utc_in
    from forgesyte.views import event_line, use_colour

    after = None
    if since is not None:
        try:
            after = utc_in(-parse_duration(since))
        except ConfigError as exc:
            raise UserError(f"--since: {str(exc)[0].lower()}{str(exc)[1:]}") from None
    settings = _settings(ctx)
    _ready_dirs(settings, create=False)
    colour = use_colour(sys.stdout)

    def emit(batch: list[dict[str, Any]]) -> None:
        for event in batch:
            if as_json:
                record = {k: event.get(k) for k in ("time", "job_id", "input", "status", "error")}
                click.echo(json.dumps(record, ensure_ascii=False))
            else:
                click.echo(event_line(event, colour))
        sys.stdout.flush()

    try:
        batch, cursor = read_events(settings.state, after)
        emit(batch)
        while follow:
            time.sleep(POLL)
            batch, cursor = read_events(settings.state, None, cursor)
            emit(batch)
    except EventLogError as exc:
        raise UserError(str(exc)) from None
    except KeyboardInterrupt:
        pass
