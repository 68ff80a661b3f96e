"""Commands that change the state (retry, prune) and check it (doctor)."""

from __future__ import annotations

import sys

import click

from forgesyte.cli import EXIT_USER, UserError, _ready_dirs, _settings, cli
from forgesyte.config import ConfigError


@cli.command()
@click.argument("job")
@click.pass_context
def retry(ctx: click.Context, job: str) -> None:
    """Send a failed job back to pending."""
    from forgesyte.daemon.control import ControlError, request

    settings = _settings(ctx)
    _ready_dirs(settings, create=True)
    try:
        answer = request(settings, {"op": "retry", "job": job})
    except ControlError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"Job {answer['job']['id']} ({answer['job']['input']}) is pending again.")


@cli.command()
@click.option("--older-than", "older_than", required=True, metavar="DURATION",
              help="Age of the finish time, e.g. 30d, 12h, 90m.")
@click.option("--outputs", is_flag=True, help="Also delete the pruned jobs' result folders.")
@click.pass_context
def prune(ctx: click.Context, older_than: str, outputs: bool) -> None:
    """Remove old completed/failed records (never pending or running ones)."""
    from forgesyte.config import parse_duration
    from forgesyte.daemon.control import ControlError, request

    try:
        seconds = parse_duration(older_than)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    settings = _settings(ctx)
    _ready_dirs(settings, create=True)
    try:
        answer = request(settings, {"op": "prune", "older_than_s": seconds, "outputs": outputs})
    except ControlError as exc:
        raise UserError(str(exc)) from None
    folders = f" and {answer['folders']} result folders" if outputs else ""
    click.echo(f"Pruned {answer['removed']} job records{folders}.")



@cli.command()
@click.pass_context
def doctor(ctx: click.Context) -> None:
    """Check directories, inotify limits, plugins and the daemon; say what to fix."""
    from forgesyte.doctor import FAIL, OK, run_checks
    from forgesyte.views import use_colour

    settings = _settings(ctx)
    colour = use_colour(sys.stdout)
    checks = run_checks(settings)
    for check in checks:
        mark = {OK: "completed", FAIL: "failed"}.get(check.level, "running")
        label = click.style(f"[{check.level}]", fg={"completed": "green", "failed": "red"}.get(mark, "yellow")) \
            if colour else f"[{check.level}]"
        click.echo(f"{label} {check.what}")
        if check.fix:
            click.echo(f"       fix: {check.fix}")
    if any(c.level == FAIL for c in checks):
        raise click.exceptions.Exit(EXIT_USER)


