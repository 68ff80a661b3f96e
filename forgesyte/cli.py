"""The `forgesyte` command: click commands only (parse, call one function, render).

Errors are one sentence on stderr with the contract's exit code, never a
traceback: 1 for a bad job or argument, 2 for bad configuration (and for any
usage error of `run`, which is configuration too).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import click

from forgesyte import __version__
from forgesyte.config import ConfigError, Settings, load_settings, prepare_directories

EXIT_USER = 1
EXIT_CONFIG = 2


class UserError(click.ClickException):
    exit_code = EXIT_USER

    def show(self, file=None) -> None:
        click.echo(self.format_message(), err=True)


class ConfigFailure(UserError):
    exit_code = EXIT_CONFIG


def _sentence(text: str) -> str:
    text = " ".join(str(text).split())
    return text if text.endswith((".", "!", "?")) else text + "."


class ForgesyteGroup(click.Group):
    """Turns every failure into one sentence on stderr and the right exit code."""

    def main(self, args=None, prog_name="forgesyte", **extra):
        try:
            rv = super().main(args=args, prog_name=prog_name, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.exceptions.UsageError as exc:
            is_run = exc.ctx is not None and exc.ctx.command.name == "run"
            click.echo(_sentence(exc.format_message()) + " See 'forgesyte --help'.", err=True)
            sys.exit(EXIT_CONFIG if is_run else EXIT_USER)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except KeyboardInterrupt:
            sys.exit(130)
        except BrokenPipeError:
            # Output closed early (e.g. piped into head): not an error worth a sentence.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(0)
        except Exception as exc:  # last resort: still one sentence, never a traceback
            logging.getLogger("forgesyte").debug("unexpected error", exc_info=True)
            click.echo(_sentence(f"Unexpected error: {type(exc).__name__}: {exc}"), err=True)
            sys.exit(EXIT_USER)
        sys.exit(rv if isinstance(rv, int) else 0)


def _settings(ctx: click.Context, **flags: Any) -> Settings:
    try:
        return load_settings({**ctx.obj, **flags})
    except ConfigError as exc:
        raise ConfigFailure(str(exc)) from None


def _ready_dirs(settings: Settings, create: bool) -> None:
    try:
        # Reads neither create nor need write access; a path that is not a directory is still wrong.
        prepare_directories(settings, create=create, missing_ok=not create, writable=create)
    except ConfigError as exc:
        raise ConfigFailure(str(exc)) from None


def _store(settings: Settings):
    from forgesyte.storage.jobs import JobStore
    from forgesyte.storage.tinystore import StoreCorrupt

    try:
        return JobStore(settings.state, readonly=True)
    except StoreCorrupt as exc:
        raise UserError(str(exc)) from None


def _emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2 if sys.stdout.isatty() else None, ensure_ascii=False))


def _resolve(store, ref: str) -> dict[str, Any]:
    from forgesyte.storage.jobs import AmbiguousJob, JobNotFound

    try:
        return store.resolve(ref)
    except (JobNotFound, AmbiguousJob) as exc:
        raise UserError(str(exc)) from None


@click.group(cls=ForgesyteGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="forgesyte")
@click.option("--home", type=click.Path(path_type=Path), help="Parent of inbox/output/state. Env: FORGESYTE_HOME.")
@click.option("--inbox", type=click.Path(path_type=Path), help="Watched folder. Env: FORGESYTE_INBOX.")
@click.option("--output", type=click.Path(path_type=Path), help="Results folder. Env: FORGESYTE_OUTPUT.")
@click.option("--state", type=click.Path(path_type=Path), help="Database, lock and pid. Env: FORGESYTE_STATE.")
@click.option("--config", type=click.Path(path_type=Path), help="TOML settings file. Env: FORGESYTE_CONFIG.")
@click.pass_context
def cli(ctx: click.Context, **flags: Any) -> None:
    """ForgeSyte: drop videos into the inbox, get JSON results out."""
    ctx.obj = {k: v for k, v in flags.items() if v is not None}


@cli.command()
@click.option("--once", is_flag=True, help="Process what is in the inbox now, wait for it, exit.")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes (default 2).")
@click.option("--plugins", help="Comma-separated plugin chain, e.g. metadata.")
@click.option("--polling", is_flag=True, default=None, help="Stat-polling observer, for NFS/CIFS inboxes.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              default="info", show_default=True)
@click.pass_context
def run(ctx: click.Context, once: bool, workers, plugins, polling, log_level: str) -> int:
    """Run the daemon in the foreground (logs to stderr)."""
    from forgesyte.daemon.service import AlreadyRunning, Daemon
    from forgesyte.plugins.registry import DiscoveryFailed, probe

    settings = _settings(ctx, workers=workers, plugins=plugins, polling=polling)
    _ready_dirs(settings, create=True)
    try:
        available = probe()
    except DiscoveryFailed as exc:
        raise ConfigFailure(str(exc)) from None
    for name in sorted(settings.all_plugin_names()):
        if name not in available:
            raise ConfigFailure(f"Unknown plugin '{name}'; installed: {', '.join(sorted(available))}.")
        if available[name]["error"]:
            raise ConfigFailure(f"Plugin '{name}' cannot be loaded: {available[name]['error']}.")
    from forgesyte.daemon.systemd import configure_logging

    level = getattr(logging, log_level.upper())
    configure_logging(level)
    flags = dict(ctx.obj, workers=workers, plugins=plugins, polling=polling)
    try:
        return Daemon(settings, once=once, log_level=level,
                      reload=lambda: load_settings(flags)).run()
    except AlreadyRunning as exc:
        raise ConfigFailure(str(exc)) from None


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
@click.option("--json", "as_json", is_flag=True, help="One JSON document (a list) on stdout.")
def plugins(as_json: bool) -> None:
    """Installed plugins: name, version, description (and load errors)."""
    from forgesyte.plugins.registry import discover

    found = [info.as_json() for info in discover().values()]
    if as_json:
        _emit_json(found)
        return
    width = max(len(p["name"]) for p in found)
    for p in found:
        tail = f"LOAD ERROR: {p['error']}" if p["error"] else p["description"]
        click.echo(f"{p['name'].ljust(width)}  {str(p['version'] or '-').ljust(6)}  {tail}")


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


@cli.group()
def service() -> None:
    """Run ForgeSyte under systemd."""


@service.command("install")
@click.option("--user", "user_unit", is_flag=True, help="A user unit (~/.config/systemd/user), no root needed.")
@click.option("--print", "print_only", is_flag=True, help="Print the unit instead of writing it.")
@click.option("--unit-dir", type=click.Path(path_type=Path), help="Where to write the unit file.")
@click.option("--service-user", default="forgesyte", show_default=True, help="System unit: the account to run as.")
@click.pass_context
def service_install(ctx: click.Context, user_unit: bool, print_only: bool, unit_dir, service_user: str) -> None:
    """Write a systemd unit for the configured directories, and say how to enable it."""
    from forgesyte.daemon.unit import render
    from forgesyte.daemon.unit import unit_dir as default_unit_dir

    settings = _settings(ctx)
    exec_start = f"{sys.executable} -m forgesyte"
    text = render(settings, exec_start, user_unit=user_unit, service_user=service_user,
                  origin=" on this machine")
    if print_only:
        click.echo(text, nl=False)
        return
    folder = unit_dir or default_unit_dir(user_unit)
    path = folder / "forgesyte.service"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        raise UserError(f"Cannot write {path}: {exc.strerror} (a system unit needs root; try --user).") from None
    ctl = "systemctl --user" if user_unit else "systemctl"
    click.echo(f"Wrote {path}.")
    if not user_unit:
        dirs = " ".join(str(d) for d in (settings.inbox, settings.output, settings.state))
        click.echo(f"Create the account and hand it the directories (once):\n"
                   f"  useradd --system --no-create-home --shell /usr/sbin/nologin {service_user}\n"
                   f"  mkdir -p {dirs} && chown -R {service_user}: {dirs}")
    click.echo(f"Then:\n  {ctl} daemon-reload\n  {ctl} enable --now forgesyte\n"
               f"  {ctl} status forgesyte\n  journalctl {'--user-unit' if user_unit else '-u'} forgesyte -f")


def main() -> None:
    cli.main(prog_name="forgesyte")
