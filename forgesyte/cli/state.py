"""`fsck`: verify the state folder (and its agreement with the output folder); repair it."""

from __future__ import annotations

from typing import Any

import click

from forgesyte.cli import UserError, _emit_json, _ready_dirs, _settings, cli

OUTPUT_PREFIX = "(output) "


def _finding_json(finding) -> dict[str, Any]:
    document = finding.as_json()
    if finding.name.startswith(OUTPUT_PREFIX):
        document.update(file=finding.name[len(OUTPUT_PREFIX):], folder="output")
    else:
        document["folder"] = "state"
    return document


def _line(finding) -> str:
    from forgesyte.text import display

    text = f"{display(finding.name)}: {finding.problem}"
    return text + (f" [repair: {finding.action}]" if finding.action else "")


@cli.command()
@click.option("--repair", is_flag=True, help="Rebuild what can be rebuilt; damaged files go to "
              "state/quarantine/ (nothing is deleted).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_context
def fsck(ctx: click.Context, repair: bool, as_json: bool) -> None:
    """Verify every state file and its agreement with the output folder; name each problem."""
    from forgesyte.daemon.lock import StateLock, daemon_info
    from forgesyte.storage import rebuild

    settings = _settings(ctx)
    _ready_dirs(settings, create=False)
    if not settings.state.is_dir():
        raise UserError(f"There is no state folder at {settings.state}; nothing to check.")
    lock = None
    if repair:
        lock = StateLock(settings.state)
        if not lock.acquire(wait=0.5, owner="fsck"):
            raise UserError("A ForgeSyte daemon holds this state folder; stop it before "
                            "`forgesyte fsck --repair` (a plain `forgesyte fsck` can run alongside it).")
    try:
        if repair:  # the store, then what the writer repairs by itself, then the fingerprint index
            report = rebuild.repair(settings.state, settings.output)
            remaining = report.after.problems if report.after is not None else report.problems
        else:  # the very check `doctor` makes (rebuild.health)
            report = rebuild.stable_check(settings.state, settings.output, daemon_info(settings.state)["running"])
            remaining = report.problems
    finally:
        if lock is not None:
            lock.release()
    healthy = not remaining
    if as_json:
        _emit_json({
            "state": str(settings.state),
            "healthy": healthy,
            "repaired": bool(repair and report.problems and healthy),
            "problems": [_finding_json(f) for f in report.problems],
            "remaining": [_finding_json(f) for f in remaining],
            "notices": [_finding_json(f) for f in report.findings if f.kind == "notice"],
            "records": report.records,
            "restored_from_results": report.restored,
            "quarantined": report.quarantined,
        })
    else:
        _print(report, remaining, repair)
    if not healthy:
        raise click.exceptions.Exit(1)


def _print(report, remaining, repair: bool) -> None:
    for finding in report.findings:
        if finding.kind == "notice":
            click.echo(f"note: {_line(finding)}")
    for finding in report.problems:
        click.echo(_line(finding))
    records = f"{report.records:,} job record{'' if report.records == 1 else 's'}"
    if not report.problems:
        click.echo(f"The state is healthy: {records}.")
    elif not repair:
        click.echo(f"{len(report.problems)} problem{'' if len(report.problems) == 1 else 's'} in the state "
                   f"({records} readable). Run `forgesyte fsck --repair` to repair "
                   f"{'it' if len(report.problems) == 1 else 'them'}.")
    elif not remaining:
        restored = f", {report.restored:,} of them restored from results documents" if report.restored else ""
        aside = f"; the files it replaced are in {', '.join(report.quarantined)}" if report.quarantined else ""
        click.echo(f"Repaired: the state is healthy again ({records}{restored}){aside}. Pending work "
                   "whose record was lost is taken from the inbox again when the daemon starts.")
    else:
        for finding in remaining:
            click.echo(f"still: {_line(finding)}")
        click.echo(f"{len(remaining)} problem{'' if len(remaining) == 1 else 's'} could not be repaired.")
