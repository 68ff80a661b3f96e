"""Commands that change the state (retry, cancel, rerun, prune), explain it (why) and check it (doctor).

Changes go through forgesyte.daemon.control: handed to the daemon when one
runs (it stays the only writer), applied under the state lock otherwise.
None of them creates a state folder: under a mistyped --home they say so.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click

from forgesyte.cli import (
    EXIT_USER, ConfigFailure, UserError, _complete_jobs, _emit_json, _ready_dirs, _resolve, _settings,
    _store, cli, lossless, path_key,
)
from forgesyte.cli.complete import complete_paths
from forgesyte.config import ConfigError, Settings
from forgesyte.text import display


def _control(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    from forgesyte.daemon.control import ControlError
    from forgesyte.daemon.control import request as send

    _ready_dirs(settings, create=False)
    if not settings.state.is_dir():
        ref = request.get("job")
        what = f"No job matches {display(repr(ref))}: there" if ref is not None else "There"
        raise UserError(f"{what} is no ForgeSyte state folder at {settings.state}; check --home or --state.")
    try:
        return send(settings, request)
    except ControlError as exc:
        raise UserError(str(exc)) from None


def _say(record: dict[str, Any], what: str) -> None:
    click.echo(f"Job {record['id']} ({display(record['input'])}) {what}")


@cli.command()
@click.argument("job", required=False, shell_complete=_complete_jobs)
@click.option("--failed", "all_failed", is_flag=True, help="Every failed job (instead of JOB).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_context
def retry(ctx: click.Context, job: str | None, all_failed: bool, as_json: bool) -> None:
    """Send a failed job (or, with --failed, every failed job) back to pending."""
    if (job is None) == (not all_failed):
        raise UserError("Give either JOB or --failed (not both).")
    settings = _settings(ctx)
    if all_failed:
        _ready_dirs(settings, create=False)
        nowhere = not settings.state.is_dir()
        answer = {"retried": 0, "jobs": []} if nowhere else _control(settings, {"op": "retry_failed"})
        if as_json:
            _emit_json({"retried": answer["retried"], "jobs": answer["jobs"]})
        else:
            n = answer["retried"]
            where = f" (there is no state folder at {settings.state})" if nowhere else ""
            click.echo(f"{n} failed job{'s are' if n != 1 else ' is'} pending again{where}.")
        return
    job = _job_ref(settings, job)
    answer = _control(settings, {"op": "retry", "job": job})
    if as_json:
        _emit_json(answer["job"])
    else:
        _say(answer["job"], "is pending again.")


def _job_ref(settings: Settings, ref: str) -> str:
    """The CLI resolves JOB (paths, candidates, the raw-bytes spelling) and sends the id."""
    return _resolve(_store(settings), ref, settings)["id"] if settings.state.is_dir() else ref


@cli.command()
@click.argument("job", shell_complete=_complete_jobs)
@click.option("--json", "as_json", is_flag=True, help="The job's record (once stopped) on stdout.")
@click.pass_context
def cancel(ctx: click.Context, job: str, as_json: bool) -> None:
    """Stop a pending or running job; it ends failed with error "Cancelled."."""
    settings = _settings(ctx)
    job = _job_ref(settings, job)
    answer = _control(settings, {"op": "cancel", "job": job})
    record = answer["job"]
    if answer.get("stopping"):
        # The daemon killed the worker's process group; the record says so once it has flushed.
        from forgesyte.storage.jobs import public_record

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            current = public_record(_store(settings).get(record["id"]))
            if current["status"] != "running":
                record = current
                break
            time.sleep(0.05)
    if as_json:
        _emit_json(record)
    elif record["status"] == "failed":
        _say(record, "is cancelled.")
    else:
        _say(record, "is being stopped.")


@cli.command()
@click.argument("job", shell_complete=_complete_jobs)
@click.option("--json", "as_json", is_flag=True, help="The new job's record on stdout.")
@click.pass_context
def rerun(ctx: click.Context, job: str, as_json: bool) -> None:
    """Run a finished job's input again, as a new job with today's plugin chain."""
    from forgesyte.daemon.intake import sha256_file
    from forgesyte.storage.jobs import FINISHED
    from forgesyte.storage.paths import Root, UnsafeKey

    settings = _settings(ctx)
    _ready_dirs(settings, create=False)
    if not settings.state.is_dir():
        _control(settings, {"op": "rerun", "job": job})  # says there is no state
    store = _store(settings)
    record = _resolve(store, job, settings)
    if record["status"] not in FINISHED:
        raise UserError(f"Job {record['id']} is {record['status']}, not finished; only a completed or "
                        "failed job can be rerun.")
    # The content facts of the input as it is now: hashing here keeps the daemon's loop free.
    try:
        path = Root(settings.inbox).path_for(record["input"])
        st = os.stat(path)
        latest = store.latest_for_input(record["input"]) or {}
        if (st.st_size, st.st_mtime_ns) == (latest.get("size"), latest.get("mtime_ns")):
            sha = latest["sha256"]
        else:
            sha = sha256_file(str(path))
    except (OSError, UnsafeKey):
        raise UserError(f"The input {display(record['input'])} is no longer in the inbox, so job "
                        f"{record['id']} cannot be rerun.") from None
    answer = _control(settings, {"op": "rerun", "job": record["id"], "facts": {
        "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}})
    if as_json:
        _emit_json(answer["job"])
    else:
        _say(answer["job"], f"is pending: a rerun of {record['id']} with {', '.join(answer['job']['plugins'])}.")


@cli.command()
@click.option("--older-than", "older_than", required=True, metavar="DURATION",
              help="Age of the finish time, e.g. 30d, 12h, 90m.")
@click.option("--outputs", is_flag=True, help="Also delete the pruned jobs' result folders.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_context
def prune(ctx: click.Context, older_than: str, outputs: bool, dry_run: bool, as_json: bool) -> None:
    """Remove old completed/failed records (never pending or running ones)."""
    from forgesyte.config import parse_duration
    from forgesyte.storage.ids import utc_in
    from forgesyte.storage.jobs import public_record

    try:
        seconds = parse_duration(older_than)
    except ConfigError as exc:
        raise UserError(f"--older-than: {str(exc)[0].lower()}{str(exc)[1:]}") from None
    settings = _settings(ctx)
    _ready_dirs(settings, create=False)
    if not settings.state.is_dir():
        document = {"dry_run": dry_run, "removed": 0, "folders": 0}
        if dry_run:
            document["jobs"] = []
        _emit_json(document) if as_json else click.echo(
            f"Nothing to prune: there is no state folder at {settings.state}.")
        return
    if dry_run:
        jobs = [public_record(j) for j in _store(settings).prune(utc_in(-seconds), dry_run=True)]
        folders = sum(1 for j in jobs if j.get("output")) if outputs else 0
        if as_json:
            _emit_json({"dry_run": True, "removed": len(jobs), "folders": folders, "jobs": jobs})
            return
        from forgesyte.views import age

        for job in jobs:
            click.echo(f"would remove  {job['id']}  {job['status']:<9}  finished {age(job['finished_at'])} "
                       f"ago  {display(job['input'])}")
        extra = f" and {folders} result folders" if outputs else ""
        click.echo(f"Would prune {len(jobs)} job records{extra}; nothing was removed (--dry-run).")
        return
    answer = _control(settings, {"op": "prune", "older_than_s": seconds, "outputs": outputs})
    if as_json:
        _emit_json({"dry_run": False, "removed": answer["removed"], "folders": answer["folders"]})
        return
    folders = f" and {answer['folders']} result folders" if outputs else ""
    click.echo(f"Pruned {answer['removed']} job records{folders}.")


@cli.command()
@click.argument("path", type=click.Path(), shell_complete=complete_paths)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_context
def why(ctx: click.Context, path: str, as_json: bool) -> None:
    """Is PATH a job, and if not, why not. PATH: relative to the inbox, or a path inside it."""
    from forgesyte.daemon.lock import daemon_info
    from forgesyte.daemon.why import explain

    settings = _settings(ctx)
    _ready_dirs(settings, create=False)
    key = path_key(settings, path)
    if key is None:
        answer = {"path": lossless(path), "job": None, "verdict": "invalid", "pattern": None, "since": None,
                  "reason": f"{display(path)} is not inside the inbox {settings.inbox}, so it cannot become a job."}
    elif daemon_info(settings.state)["running"]:
        answer = _control(settings, {"op": "why", "key": key})["why"]
    else:
        answer = explain(settings, _store(settings), key)
    if as_json:
        _emit_json(answer)
    else:
        click.echo(answer["reason"])


@cli.command()
@click.pass_context
def doctor(ctx: click.Context) -> None:
    """Check the configuration, directories, inotify limits, plugins and the daemon; say what to fix."""
    from forgesyte.doctor import FAIL, OK, Check, run_checks
    from forgesyte.views import use_colour

    colour = use_colour(sys.stdout)
    try:
        checks = run_checks(_settings(ctx))
    except ConfigFailure as exc:
        checks = [Check(FAIL, exc.format_message(), "Fix the setting named above.")]
    for check in checks:
        mark = {OK: "completed", FAIL: "failed"}.get(check.level, "running")
        label = click.style(f"[{check.level}]", fg={"completed": "green", "failed": "red"}.get(mark, "yellow")) \
            if colour else f"[{check.level}]"
        click.echo(f"{label} {check.what}")
        if check.fix:
            click.echo(f"       fix: {check.fix}")
    if any(c.level == FAIL for c in checks):
        raise click.exceptions.Exit(EXIT_USER)
